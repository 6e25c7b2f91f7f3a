"""A science smoke test that CI can afford: a detector trained for two minutes on this CPU, through the command line
as a user runs it, must find clumps on a survey it never saw. The full demo's numbers are in the detector results
chapter; this test only guards against a change that leaves everything running but the detector blind."""
import json
import subprocess
import sys


def clumpnb(*args):
    r = subprocess.run([sys.executable, "-m", "clumpnb.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_a_short_training_run_finds_clumps_on_an_unseen_survey(tmp_path):
    clumpnb("simulate", "--n", 160, "--seed", 0, "--out", tmp_path / "train", "--json")
    clumpnb("simulate", "--n", 60, "--seed", 1, "--out", tmp_path / "heldout", "--json")
    clumpnb("train", "--data", tmp_path / "train", "--out", tmp_path / "run", "--labels", "truth", "--epochs", 10,
            "--json")  # fmt: skip
    m = json.loads(clumpnb("evaluate", "--run", tmp_path / "run", "--data", tmp_path / "heldout", "--json"))
    truth = m["truth"]
    # measured when this test was written: completeness 0.75 for flux ratio >= 8%, purity 0.87 (CPU training is not
    # bit-reproducible, hence the margin); a blind or indiscriminate detector fails both
    assert truth["completeness_ge8"] >= 0.6, truth
    assert truth["purity"] is not None and truth["purity"] >= 0.7, truth
    assert truth["n_true_ge8"] >= 40, truth  # enough bright clumps for the rates to mean something
