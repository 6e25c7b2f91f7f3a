"""`detect` and `train` across machines under torchrun: two nodes of one process each, on this one machine, meeting
through the c10d rendezvous exactly as two real nodes would (the command-line chapter,
nbs/99_cli.ipynb, section "Many machines")."""
import json
import socket
import subprocess
import sys

import numpy as np
from astropy.table import Table

from clumpnb.data.folder import write_survey
from clumpnb.detector.model import DetectorConfig
from clumpnb.detector.train import TrainConfig, train

SMALL = DetectorConfig(fpn_channels=32, box_head=64, rpn_pre_nms=(100, 50), rpn_post_nms=(50, 30))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(*args, timeout=600):
    "Start the clumpnb command `args` as node 0 and node 1 of a 2-node torchrun job; both must succeed."
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "clumpnb-test",
           "-m", "clumpnb.cli", *map(str, args)]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=timeout) for p in nodes]
    for p, (out, err) in zip(nodes, outs):
        assert p.returncode == 0, err[-3000:]
    return [o for o, _ in outs]


def test_detect_and_train_on_two_nodes(tmp_path):
    write_survey(tmp_path / "survey", 24, seed=0, progress=False)
    run = tmp_path / "run"
    train(TrainConfig(data=str(tmp_path / "survey"), out=str(run), detector=SMALL, epochs=1, val_max=4), progress=False)
    cutouts = tmp_path / "survey" / "cutouts"
    one = subprocess.run([sys.executable, "-m", "clumpnb.cli", "detect", "--run", run, cutouts, "--out",
                          tmp_path / "one.ecsv", "--threshold", "0.01", "--json", "--workers", "0"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr
    outs = two_nodes("detect", "--run-dir", run, cutouts, "--out", tmp_path / "two.ecsv", "--threshold", "0.01", "--json")
    summary = json.loads(next(o for o in outs if o.strip()))  # the first rank prints the merged catalogue's summary
    assert (summary["world"], summary["n_inputs"], summary["n_read"]) == (2, 24, 24)
    parts = sorted((tmp_path / "two.ecsv.parts").glob("part-r*.ecsv"))
    assert {p.name[:9] for p in parts} == {"part-r000", "part-r001"}  # each rank wrote its own parts
    covered = [k for p in parts for k in Table.read(p, format="ascii.ecsv").meta["keys"]]
    assert len(covered) == len(set(covered)) == 24  # every cutout once: no gaps, no duplicates
    a, b = Table.read(tmp_path / "one.ecsv"), Table.read(tmp_path / "two.ecsv")
    assert len(a) == len(b) and list(a["file"]) == list(b["file"]) and list(a["clump_id"]) == list(b["clump_id"])
    np.testing.assert_allclose(b["score"], a["score"], atol=1e-5)
    two_nodes("train", "--data", tmp_path / "survey", "--out", tmp_path / "ddp", "--epochs", "1", "--batch-size", "4",
              "--labels", "truth", "--json")  # fmt: skip
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(history) == 1 and history[0]["epoch"] == 1
