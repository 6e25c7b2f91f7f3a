"""Every foreseeable mistake, one row each of `clumpnb.cli.BAD_INPUTS` (the command-line chapter's "Bad input"
section): the command refuses it with exit status 2, one line that says what to fix, no traceback, and nothing
half-written, before any network is built. Commands run in this process through `clumpnb.cli.main`, as the `clumpnb`
entry point runs them (test_cli.py runs a few of them in a real subprocess)."""
import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from clumpnb.cli import BAD_INPUTS, main


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
    "The shared folder `{w}` of the rows: what each file is, the table in the command-line chapter says."
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
    whole = first.read_bytes()
    (w / "half.fits").write_bytes(whole[: 2880 * (len(whole) // 2880 // 2)])  # a download stopped half-way
    two_bands(first, w / "two_band.fits")
    lone_band(first, w / "lone-g.fits")
    (w / "café.fits").write_bytes(first.read_bytes())
    (w / "a_file").write_text("x")
    # ---- more files the rows need: add them here and to the table in the command-line chapter ----
    # the same survey under another seed: a run trained on `s/` must not resume on it
    shutil.copytree(w / "s", w / "s_other")
    record = json.loads((w / "s_other" / "survey.json").read_text())
    (w / "s_other" / "survey.json").write_text(json.dumps({**record, "seed": 3}))
    # the same survey with a stray file among its cutouts, and the same survey said to be larger
    shutil.copytree(w / "s", w / "s_stray")
    shutil.copy(w / "s" / "cutouts" / "sim0000_000001.fits", w / "s_stray" / "cutouts" / "sim0000_000001 (copy).fits")
    shutil.copytree(w / "s", w / "s_grown")
    (w / "s_grown" / "survey.json").write_text(json.dumps({**record, "n": 8}))
    from clumpnb.detector.catalog import LockHolder, flock_lock

    (w / "folder.csv").mkdir()  # a folder named as a catalogue
    (w / "locked.csv.parts").mkdir()  # a catalogue a running detect writes: this process holds its lock while the
    held = flock_lock(w / "locked.csv.parts", LockHolder.me())  # rows run (a second open file of it cannot lock it)
    yield w
    held.close()


def lone_band(src: Path, out: Path):
    "The g band of the cutout `src` alone in a FITS file `out`, with its WCS, as archives serve one band."
    with fits.open(src) as h:
        header = h["G"].header.copy()
        del header["EXTNAME"]
        fits.PrimaryHDU(h["G"].data, header).writeto(out)


def two_bands(src: Path, out: Path):
    "The cutout `src` without its i band: G and R extensions where G, R and I are expected."
    with fits.open(src) as h:
        fits.HDUList([fits.PrimaryHDU(header=h[0].header), h["G"].copy(), h["R"].copy()]).writeto(out)


class NoModel(BaseException):
    "Raised when a row refused before any network is built builds one or reads weights; no `except Exception` hides it."


@pytest.fixture
def no_model(monkeypatch):
    "Make building any network and reading any weights fail: a refusal that comes late then shows as this error."

    def refuse(*a, **k):
        raise NoModel("a network was built or weights were read before the refusal")

    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[b.name for b in BAD_INPUTS])
def test_refused(w, tmp_path, request, case):
    if case.no_gpu and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    if case.model_free:
        request.getfixturevalue("no_model")
    args, messages = case.filled(w, tmp_path)
    rc, err = cli(*args)
    said = [line for line in err.splitlines() if ": error: " in line]  # argparse's usage lines come before it
    assert rc == 2 and len(said) == 1 and all(m in said[0] for m in messages), err
    assert "Traceback" not in err
    left = [p for p in case.absent if (tmp_path / p).exists()]
    assert not left, f"left behind: {left}"


def test_refusals_that_need_no_model_are_marked():
    """The rows that may build a model are the few whose refusal needs what only reading gives: a checkpoint to resume,
    or the content of each input cutout, which `detect` reads in its workers beside the network."""
    late = {b.name for b in BAD_INPUTS if not b.model_free}
    inputs = {"detect, nothing readable", "detect --strict, one skipped", "detect, FITS cut at a block boundary",
              "detect, FITS cut in half", "detect, a two-band file", "detect, one band without its set"}
    assert late - inputs and all(name.startswith("train --resume") for name in late - inputs), late
    assert late & inputs == inputs, inputs - late  # a row made model-free should leave this list


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
