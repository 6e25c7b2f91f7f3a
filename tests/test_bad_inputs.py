"""Every foreseeable mistake, one row each: the command refuses it with exit status 2, a message that says what to fix,
no traceback, and nothing half-written. Commands run in this process through `clumpnb.cli.main`, as the `clumpnb`
entry point runs them (test_cli.py runs a few of them in a real subprocess)."""
import contextlib
import io
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from astropy.table import Table

from clumpnb.cli import main


def cli(*args) -> tuple:
    "(exit status, stderr) of `clumpnb ARGS`; an unforeseen exception propagates with its traceback, as for a user."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse refuses
            rc = e.code
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """What the cases need: a small survey (`s`), a one-epoch run (`run`), a catalogue made by it (`cat.csv`), a run
    with a truncated checkpoint (`cut_run`), a Clump Scout catalogue cut mid-row, a FITS cutout cut at a 2880-byte
    block boundary, a cutout under a non-ASCII name."""
    from clumpnb.data.clumpscout import clumpscout_rows, write_clumpscout
    from clumpnb.data.simulate import simulate
    from astropy.table import vstack

    w = tmp_path_factory.mktemp("w")
    for args in (("simulate", "--n", 6, "--cutout-size", 64, "--volunteers", 0, "--out", w / "s"),
                 ("train", "--data", w / "s", "--out", w / "run", "--epochs", 1, "--labels", "truth"),
                 ("detect", "--run", w / "run", w / "s" / "cutouts", "--out", w / "cat.csv", "--threshold", 0.5)):
        rc, err = cli(*args)
        assert rc == 0, err
    (w / "cut_run").mkdir()
    for f in ("model.pt", "history.json"):
        (w / "cut_run" / f).write_bytes((w / "run" / f).read_bytes())
    (w / "cut_run" / "checkpoint.pt").write_bytes((w / "run" / "checkpoint.pt").read_bytes()[:1000])
    rows = [clumpscout_rows(g, 1237650000000000000 + i) for i, g in enumerate(simulate(4, seed=5)) if len(g.clumps)]
    write_clumpscout(vstack(rows), w / "full_mrt.txt")
    text = (w / "full_mrt.txt").read_text()
    (w / "cut_mrt.txt").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # a download cut short
    first = sorted((w / "s" / "cutouts").glob("*.fits"))[0]
    (w / "blocks.fits").write_bytes(first.read_bytes()[: 2880 * 3])
    (w / "café.fits").write_bytes(first.read_bytes())
    (w / "a_file").write_text("x")
    return w


class Case(NamedTuple):
    args: tuple  # "{w}" is the fixture's folder, "{o}" this case's own empty folder
    message: str | tuple  # what stderr must say (each of them)
    absent: tuple = ("out",)  # what must not exist in "{o}" afterwards


DETECT = ("detect", "--run", "{w}/run", "{w}/s/cutouts")
CASES = {
    # counts, sizes and ranges, refused by argparse with the range
    "simulate --n 0": Case(("simulate", "--n", 0, "--out", "{o}/out"), "--n: must be >= 1"),
    "simulate --seed -5": Case(("simulate", "--seed", -5, "--out", "{o}/out"), "--seed: must be >= 0 (got -5)"),
    "simulate --size 100000": Case(("simulate", "--size", 100000, "--out", "{o}/out"), "must be >= 16 and <= 2048"),
    "simulate --volunteers -3": Case(("simulate", "--volunteers", -3, "--out", "{o}/out"), "must be >= 0 (got -3)"),
    "train --epochs 0": Case(("train", "--data", "{w}/s", "--epochs", 0, "--out", "{o}/out"), "--epochs: must be >= 1"),
    "train --n-train 0": Case(("train", "--data", "{w}/s", "--n-train", 0, "--out", "{o}/out"), "must be >= 1 (got 0)"),
    "detect --batch-size -4": Case((*DETECT, "--batch-size", -4, "--out", "{o}/out.csv"), "--batch-size: must be >= 1",
                                   ("out.csv", "out.csv.parts")),  # fmt: skip
    "detect --batch-size 0": Case((*DETECT, "--batch-size", 0, "--out", "{o}/out.csv"), "--batch-size: must be >= 1",
                                  ("out.csv", "out.csv.parts")),  # fmt: skip
    "detect --threshold 1.5": Case((*DETECT, "--threshold", 1.5, "--out", "{o}/out.csv"), "must be in [0, 1]",
                                   ("out.csv", "out.csv.parts")),  # fmt: skip
    "detect --workers -1": Case((*DETECT, "--workers", -1, "--out", "{o}/out.csv"), "--workers: must be >= 0",
                                ("out.csv",)),  # fmt: skip
    "detect --device tpu": Case((*DETECT, "--device", "tpu", "--out", "{o}/out.csv"), "invalid choice: 'tpu'",
                                ("out.csv",)),  # fmt: skip
    "lst --pthresh 1.5": Case(("lst", "--pthresh", 1.5, "--out", "{o}/out"), "--pthresh: must be in [0, 1]"),
    "lst --image-size 0": Case(("lst", "--image-size", 0, "--out", "{o}/out"), "--image-size: must be >= 16"),
    "build-dataset --min-ratio 2": Case(("build-dataset", "--catalog", "{w}/full_mrt.txt", "--cutouts", "{w}/s/cutouts",
                                         "--min-ratio", 2, "--out", "{o}/out"), "--min-ratio: must be in [0, 1]"),
    "evaluate --split bogus": Case(("evaluate", "--run", "{w}/run", "--data", "{w}/s", "--split", "bogus"),
                                   "invalid choice: 'bogus' (choose from 'train', 'val', 'test', 'all')"),
    "bench simulate --n 0": Case(("bench", "simulate", "--n", 0), "--n: must be >= 1"),
    "bench detect --workers -2": Case(("bench", "detect", "--workers", -2), "--workers: must be >= 0"),
    "bench detector --backbone bogus": Case(("bench", "detector", "--backbone", "bogus"), "invalid choice: 'bogus'"),
    "bench gpu --only photometry": Case(("bench", "gpu", "--only", "photometry"), "invalid choice: 'photometry'"),
    "bench gpu --n-detect 3": Case(("bench", "gpu", "--n-detect", 3), "--n-detect: must be >= 16"),
    "simulate --seed 900": Case(("simulate", "--seed", 900, "--out", "{o}/out"), "survey seed 900 is one of the "
                                "confirmatory seeds"),  # fmt: skip
    "demo --seed 899": Case(("demo", "--quick", "--seed", 899, "--out", "{o}/out"), "--seed 899: the demo's "
                            "held-out survey would be seed 900, one of the confirmatory seeds"),  # fmt: skip
    # an --out that is a file
    "simulate --out FILE": Case(("simulate", "--n", 2, "--out", "{w}/a_file"), "is a file, not a folder"),
    "demo --out FILE": Case(("demo", "--quick", "--out", "{w}/a_file"), "is a file, not a folder"),
    "lst --out FILE": Case(("lst", "--iters", 1, "--out", "{w}/a_file"), "is a file, not a folder"),
    # stale or mixed state
    "simulate into another survey": Case(("simulate", "--n", 6, "--cutout-size", 64, "--seed", 3, "--volunteers", 0,
                                          "--out", "{w}/s"), "the folder holds a survey made with seed=0, not 3"),
    "detect with other settings": Case((*DETECT, "--threshold", 0.3, "--out", "{w}/cat.csv"), "threshold=0.5"),
    "train --resume, truncated checkpoint": Case(("train", "--data", "{w}/s", "--out", "{w}/cut_run", "--resume",
                                                  "--epochs", 2), "checkpoint.pt: field 'file': unreadable checkpoint"),
    # files that cannot be read, or a result that cannot be written
    "detect, nothing readable": Case(("detect", "--run", "{w}/run", "{o}/nope.fits", "--out", "{o}/out.csv"),
                                     "none of the 1 inputs could be read (first: {o}/nope.fits: field 'file': does "
                                     "not exist)", ("out.csv",)),  # fmt: skip
    "detect --strict, one skipped": Case((*DETECT, "{o}/nope.fits", "--strict", "--out", "{o}/out.csv"),
                                         "1 of the 7 inputs could not be read", ()),  # fmt: skip
    "detect, FITS cut at a block boundary": Case(("detect", "--run", "{w}/run", "{w}/blocks.fits", "--out",
                                                  "{o}/out.csv"), "blocks.fits: field 'file': truncated", ("out.csv",)),
    "detect, FITS catalogue of a non-ASCII path": Case(("detect", "--run", "{w}/run", "{w}/café.fits", "--out",
                                                        "{o}/out.fits"), "ASCII paths only", ("out.fits",
                                                                                              "out.fits.parts")),
    "detect --device cuda without a GPU": Case((*DETECT, "--device", "cuda", "--out", "{o}/out.csv"),
                                               "no CUDA GPU is visible to torch here; use --device cpu", ("out.csv",)),
    "build-dataset, catalogue cut mid-row": Case(("build-dataset", "--catalog", "{w}/cut_mrt.txt", "--cutouts",
                                                  "{w}/s/cutouts", "--out", "{o}/out"),
                                                 ("cut_mrt.txt: field '", "': missing value in row")),
    "build-dataset, no catalogue": Case(("build-dataset", "--catalog", "{o}/nope_mrt.txt", "--cutouts", "{w}/s/cutouts",
                                         "--out", "{o}/out"), "nope_mrt.txt: field 'file': does not exist"),
}


@pytest.mark.parametrize("name", CASES)
def test_refused(w, tmp_path, name):
    case = CASES[name]
    if "cuda" in name and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    fill = lambda s: str(s).replace("{w}", str(w)).replace("{o}", str(tmp_path))
    rc, err = cli(*map(fill, case.args))
    messages = case.message if isinstance(case.message, tuple) else (case.message,)
    assert rc == 2 and all(fill(m) in err for m in messages), err
    assert "Traceback" not in err
    left = [p for p in case.absent if (tmp_path / p).exists()]
    assert not left, f"left behind: {left}"


def test_docs_without_its_extra(monkeypatch, tmp_path):
    "`clumpnb docs` when the docs' packages are missing: it says what to install."
    monkeypatch.setitem(sys.modules, "nbformat", None)  # `import nbformat` now raises ImportError
    rc, err = cli("docs", "--only", "index", "--out", tmp_path / "site")
    assert rc == 2 and "building the docs needs nbformat: pip install nbformat" in err, err
    assert not (tmp_path / "site").exists()


def test_results_keep_the_users_umask(w):
    "Results are readable by colleagues when the umask says so: not the 0600 of a temporary file."
    mask = os.umask(0)
    os.umask(mask)
    for f in (w / "cat.csv", w / "run" / "model.pt", w / "s" / "survey.json", next((w / "s" / "cutouts").iterdir())):
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, (f, oct(f.stat().st_mode))


def test_long_and_repeated_paths(w, tmp_path, monkeypatch):
    "A path over 512 characters keeps every character in the catalogue; the same file given twice counts once."
    deep = tmp_path.joinpath(*["a_rather_long_folder_name_" + "x" * 30] * 11)
    deep.mkdir(parents=True)
    src = sorted((w / "s" / "cutouts").glob("*.fits"))[0]
    f = deep / src.name
    f.write_bytes(src.read_bytes())
    assert len(str(f)) > 512
    monkeypatch.chdir(deep)
    rc, err = cli("detect", "--run", w / "run", f, Path(src.name), "--out", tmp_path / "long.ecsv", "--threshold", 0)
    assert rc == 0, err
    t = Table.read(tmp_path / "long.ecsv")
    assert len(t) and set(t["file"]) == {str(f)} and np.all(np.diff(t["clump_id"]) > 0)
