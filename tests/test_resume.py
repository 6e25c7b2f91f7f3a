"""Training killed in a real process part way through an epoch resumes from its last checkpoint, losing at most one
checkpoint interval (counted in batches), and ends with the weights of an uninterrupted run; `train --resume` knows
its survey by `survey.json`, whatever path names it, and a checkpoint written within an epoch resumes only
under the number of processes that wrote it."""
import contextlib
import io
import os
import signal
import subprocess
import sys
import time

import torch

from clumpnb.cli import main
from clumpnb.data.folder import write_survey
from clumpnb.data.galaxy import SimConfig
from clumpnb.detector.train import Run, load_detector, params_digest
from clumpnb.nets.training import EpochState

EVERY = 2  # a checkpoint every this many batches
SCRIPT = """
import sys, time
from clumpnb.detector.model import DetectorConfig
from clumpnb.detector.train import TrainConfig, train
from clumpnb.nets.training import CheckpointEvery

small = DetectorConfig(fpn_channels=32, box_head=64, rpn_pre_nms=(100, 50), rpn_post_nms=(50, 30))
cfg = TrainConfig(data=sys.argv[1], out=sys.argv[2], detector=small, epochs=2, batch_size=4, val_max=4, labels="truth")
log = open(sys.argv[3], "a")


def seen(st):  # after the batch, and after its checkpoint when one was due
    print(st.epoch, st.batch, file=log, flush=True)
    time.sleep(float(sys.argv[4]))


train(cfg, resume=sys.argv[5] == "resume", progress=False, every=CheckpointEvery(float("inf"), %d), on_batch=seen)
""" % EVERY


def trainer(tmp, out, pause, resume=False):
    args = [sys.executable, "-c", SCRIPT, str(tmp / "s"), str(tmp / out), str(tmp / f"{out}.log"), str(pause),
            "resume" if resume else "fresh"]
    return subprocess.Popen(args, env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.PIPE, text=True)


def position(run):
    "(epoch, batch) of the run's checkpoint written part way through an epoch, else None."
    try:
        at = torch.load(run / "checkpoint.pt", weights_only=False).get("position")
    except (FileNotFoundError, EOFError, RuntimeError):
        return None
    return (at["epoch"], at["batch"]) if at else None


def test_train_killed_within_an_epoch_resumes(tmp_path):
    write_survey(tmp_path / "s", 24, seed=0, cfg=SimConfig(size=64), volunteers=0, progress=False)
    full = trainer(tmp_path, "full", 0)
    assert full.wait(timeout=600) == 0, full.stderr.read()
    p = trainer(tmp_path, "killed", 0.5)
    deadline = time.monotonic() + 600
    while position(tmp_path / "killed") is None and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before its first checkpoint within an epoch"
    assert not (tmp_path / "killed" / "model.pt").exists()
    done = [tuple(map(int, line.split())) for line in (tmp_path / "killed.log").read_text().splitlines()]
    kept = position(tmp_path / "killed")
    per_epoch = max(b for e, b in done if e == 0) if any(e == 1 for e, _ in done) else None
    count = lambda e, b: e * (per_epoch or 0) + b  # noqa: E731 (batches from the start of training)
    lost = count(*done[-1]) - count(*kept)
    assert 0 <= lost <= EVERY, (done[-1], kept)
    r = trainer(tmp_path, "killed", 0, resume=True)
    assert r.wait(timeout=600) == 0, r.stderr.read()
    after = [tuple(map(int, line.split())) for line in (tmp_path / "killed.log").read_text().splitlines()][len(done):]
    assert after[0] == (kept[0], kept[1] + 1), (after[0], kept)  # the batch after the checkpoint
    digest = lambda out: params_digest(load_detector(Run.open(tmp_path / out)))  # noqa: E731
    assert digest("killed") == digest("full")


def cli(*args) -> tuple:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


def test_resume_knows_its_survey_by_its_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = ("train", "--out", "run", "--epochs", 1, "--labels", "truth", "--batch-size", 4)
    assert cli("simulate", "--n", 8, "--cutout-size", 64, "--volunteers", 0, "--out", "s")[0] == 0
    assert cli(*train, "--data", "s")[0] == 0
    (tmp_path / "link").symlink_to(tmp_path / "s")
    for given in (tmp_path / "s", "link", "./s"):  # the same survey by an absolute path, a link, another spelling
        rc, err = cli(*train, "--data", given, "--resume")
        assert rc == 0, err
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    part_way = dict(EpochState(0, 1, world=2).record())  # as if stopped within an epoch under torchrun, 2 processes
    torch.save({**ck, "position": part_way}, tmp_path / "run" / "checkpoint.pt")
    rc, err = cli(*train, "--data", "s", "--resume")  # one process: the epoch's galaxies would be shared out otherwise
    assert rc == 2 and "checkpoint.pt: field 'position.world'" in err and "--nproc_per_node 2" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    torch.save(ck, tmp_path / "run" / "checkpoint.pt")
    (tmp_path / "s").rename(tmp_path / "s_first")
    assert cli("simulate", "--n", 8, "--cutout-size", 64, "--seed", 1, "--volunteers", 0, "--out", "s")[0] == 0
    rc, err = cli(*train, "--data", "s", "--resume")  # another survey under the same name
    assert rc == 2 and "s/survey.json: field 'seed'" in err and "seed: 0 then, 1 now" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "s" / "survey.json").unlink()  # a folder without a record, where the run's survey had one
    rc, err = cli(*train, "--data", "s", "--resume")
    assert rc == 2 and "field 'survey.json'" in err and "had a survey.json; this one" in err and "None" not in err, err
    assert cli("simulate", "--n", 12, "--cutout-size", 64, "--volunteers", 0, "--out", "s_first")[0] == 0  # grown
    rc, err = cli(*train, "--data", "s_first", "--resume")
    assert rc == 2 and "made larger since: n: 8 then, 12 now; train into another --out" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
