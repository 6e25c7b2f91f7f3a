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
    cutout's rows once, or one clear refusal. A third started while another process holds the catalogue's lock is
    refused at once, naming it, and leaves the catalogue as it was; that process killed, the next detect takes the lock
    it left. A whole survey folder, previews and all, gives each galaxy once."""
    from clumpnb.detector.catalog import LOCK

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
    parts = tmp_path / "cat.csv.parts"
    covered = [k for p in parts.glob("part-*.ecsv") for k in Table.read(p, format="ascii.ecsv").meta["keys"]]
    assert len(covered) == len(set(covered)) == 40
    assert not (parts / LOCK).exists()  # released
    before = {p.name: p.read_bytes() for p in [out, *parts.iterdir()]}
    hold = ("import sys, time\nfrom pathlib import Path\nfrom clumpnb.detector.catalog import parts_lock\n"
            "with parts_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", hold, str(parts)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline() == "held\n"  # it holds the lock now: no race with the detect below
        r = clumpnb(*cmd[3:], "3", check=False, env=env)
        said = f"another detect is writing this catalogue (pid {holder.pid} on "
        assert r.returncode == 2 and said in r.stderr and "wait for it" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert {p.name: p.read_bytes() for p in [out, *parts.iterdir()] if p.name != LOCK} == before  # untouched
    finally:
        holder.kill()  # SIGKILL: its lock file stays, the kernel drops its lock
        holder.wait()
        holder.stdout.close()
    assert json.loads((parts / LOCK).read_text())["pid"] == holder.pid
    r = clumpnb(*cmd[3:], "3", env=env)
    assert f"taken over from pid {holder.pid} on " in r.stderr and not (parts / LOCK).exists()
    assert list(zip(Table.read(out)["file"], Table.read(out)["clump_id"])) == rows
