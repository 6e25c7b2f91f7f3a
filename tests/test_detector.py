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


def test_two_detects_on_one_catalogue(survey, tmp_path):
    """Two `detect` processes started together on one --out, with different batch sizes: one catalogue holding every
    cutout's rows once, or one clear refusal; a catalogue whose lock a running process holds is refused at once, naming
    it, and a lock left by a process that has ended is taken over. A whole survey folder, previews and all, gives each
    galaxy once."""
    from clumpnb.detector.catalog import LOCK, LockHolder

    run = tmp_path / "run"
    clumpnb("train", "--data", survey, "--out", run, "--epochs", 1, "--json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = json.loads(clumpnb("detect", "--run", run, survey, "--out", tmp_path / "ref.csv", "--threshold", 0.05,
                             "--json", env=env).stdout)  # fmt: skip
    assert (ref["n_inputs"], ref["n_read"]) == (40, 40)  # the survey folder: cutouts/ and previews/, each galaxy once
    out = tmp_path / "cat.csv"
    cmd = [sys.executable, "-m", "clumpnb.cli", "detect", "--run", str(run), str(survey / "cutouts"), "--out", str(out),
           "--threshold", "0.05", "--workers", "0", "--batch-size"]  # fmt: skip
    procs = [subprocess.Popen(cmd + [bs], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for bs in ("4", "7")]  # fmt: skip
    ends = [(p.wait(600), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in ends) in ([0, 0], [0, 2]), ends
    for rc, err in ends:
        if rc == 2:  # one line naming the process that holds the catalogue
            assert "another detect is writing this catalogue (pid " in err and "Traceback" not in err, err
    cat, one = Table.read(out), Table.read(tmp_path / "ref.csv")
    rows = list(zip(cat["file"], cat["clump_id"]))
    assert len(rows) == len(set(rows)) == len(one) and rows == list(zip(one["file"], one["clump_id"]))
    parts = (tmp_path / "cat.csv.parts").glob("part-*.ecsv")
    covered = [k for p in parts for k in Table.read(p, format="ascii.ecsv").meta["keys"]]
    assert len(covered) == len(set(covered)) == 40
    assert not (tmp_path / "cat.csv.parts" / LOCK).exists()  # released
    held = tmp_path / "held.csv.parts"
    held.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (held / LOCK).write_text(LockHolder(sleeper.pid, LockHolder.me().host, "2026-01-01T00:00:00+00:00").text())
        r = clumpnb("detect", "--run", run, survey / "cutouts", "--out", tmp_path / "held.csv", check=False)
        assert r.returncode == 2 and f"pid {sleeper.pid} on " in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "held.csv").exists() and not list(held.glob("part-*"))
    finally:
        sleeper.kill()
        sleeper.wait()
    r = clumpnb("detect", "--run", run, survey / "cutouts", "--out", tmp_path / "held.csv", "--threshold", 0.05, env=env)
    assert f"took over the lock of pid {sleeper.pid}" in r.stderr and len(Table.read(tmp_path / "held.csv")) == len(one)
