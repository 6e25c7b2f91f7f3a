"The detector from the command line: train, evaluate, detect, and distributed data parallel with two gloo processes."
import json
import os
import subprocess
import sys

import pytest
from astropy.table import Table

from clumpnb.data.folder import write_survey


def clumpnb(*args, check=True, env=None):
    r = subprocess.run([sys.executable, "-m", "clumpnb.cli", *map(str, args)], capture_output=True, text=True, timeout=900, env=env)
    if check: assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    d = tmp_path_factory.mktemp("survey")
    write_survey(d, 40, seed=0, progress=False, workers=1)
    return d


def test_train_evaluate_detect(survey, tmp_path):
    run = tmp_path / "run"
    h = json.loads(clumpnb("train", "--data", survey, "--out", run, "--epochs", 1, "--json").stdout)
    assert len(h) == 1 and h[0]["epoch"] == 1
    assert (run / "model.pt").exists() and (run / "checkpoint.pt").exists()
    r = clumpnb("train", "--data", survey, "--out", run, "--epochs", 1, check=False)
    assert r.returncode == 2 and "--resume" in r.stderr
    ev = json.loads(clumpnb("evaluate", "--run", run, "--data", survey, "--json").stdout)
    assert ev["split"] == "test" and {"truth", "consensus"} <= set(ev)
    for k in ("completeness_ge8", "purity", "completeness_ge8_ci95", "curve", "coco"): assert k in ev["truth"]
    out = tmp_path / "cat.parquet"
    clumpnb("detect", "--run", run, survey / "cutouts", "--out", out, "--threshold", 0.05)
    import pyarrow.parquet as pq
    cat = pq.read_table(out)
    assert {"ra", "dec", "score", "x", "y"} <= set(cat.column_names)


def test_bad_inputs(survey, tmp_path):
    r = clumpnb("evaluate", "--run", tmp_path / "none", "--data", survey, check=False)
    assert r.returncode == 2 and "no usable checkpoint" in r.stderr
    r = clumpnb("train", "--data", tmp_path, "--out", tmp_path / "r", check=False)
    assert r.returncode == 2 and "not a survey folder" in r.stderr


def test_torchrun_two_processes_agree(survey, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m", "clumpnb.cli",
           "train", "--data", str(survey), "--out", str(run), "--epochs", "1", "--device", "cpu", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((run / f"ddp_rank{i}.json").read_text()) for i in (0, 1)]
    assert [x["world"] for x in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # the two processes end with identical weights
    assert (run / "model.pt").exists()


def test_torchrun_detect_shares_the_work(survey, tmp_path):
    run = tmp_path / "run"
    clumpnb("train", "--data", survey, "--out", run, "--epochs", 1, "--json")
    out = tmp_path / "cat.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534", "-m", "clumpnb.cli",
           "detect", "--run-dir", str(run), str(survey / "cutouts"), "--out", str(out), "--threshold", "0.05", "--batch-size", "8"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    parts = sorted((tmp_path / "cat.csv.parts").glob("part-*.ecsv"))
    assert {p.name[:9] for p in parts} == {"part-r000", "part-r001"}  # both processes wrote their share
    files = [f for p in parts for f in Table.read(p, format="ascii.ecsv").meta["files"]]
    assert len(files) == len(set(files)) == 40                       # every cutout exactly once
    assert out.exists()
