"Command-line round trips, run as a user runs them: in a subprocess."
import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table

from clumpnb.data.dataset import ClumpDataset
from clumpnb.data.io import read_coco, read_cutout


def clumpnb(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "clumpnb.cli", *map(str, args)], capture_output=True, text=True, timeout=600)
    if check: assert r.returncode == 0, r.stderr
    return r


def test_help_lists_commands():
    out = clumpnb("--help").stdout
    for cmd in ("simulate", "demo", "bench", "docs", "readme"): assert cmd in out
    assert "--out" in clumpnb("simulate", "--help").stdout


def test_simulate_writes_survey_and_resumes(tmp_path):
    out = tmp_path / "s"
    clumpnb("simulate", "--n", 12, "--seed", 3, "--size", 96, "--workers", 2, "--out", out)
    files = sorted((out / "cutouts").glob("*.fits"))
    assert len(files) == 12 and len(list((out / "previews").glob("*.png"))) == 12
    clumps = Table.read(out / "clumps.ecsv")
    ann = read_coco(out / "annotations.json")
    assert len(ann["annotations"]) == len(clumps)
    c = read_cutout(files[0])
    assert c.image.shape == (3, 96, 96)
    # a killed run: one cutout lost, a stray temporary file left; the rerun restores exactly the same file
    before = files[5].read_bytes(); files[5].unlink()
    (out / "cutouts" / ".x.fits.part").write_bytes(b"half")
    clumpnb("simulate", "--n", 12, "--seed", 3, "--size", 96, "--workers", 1, "--out", out)
    assert files[5].read_bytes() == before
    assert len(ClumpDataset(out, labels="consensus")) == 12


def test_simulate_bad_arguments(tmp_path):
    r = clumpnb("simulate", "--n", 0, "--out", tmp_path, check=False)
    assert r.returncode == 2 and "--n must be >= 1" in r.stderr


def test_bench_simulate_json():
    r = json.loads(clumpnb("bench", "simulate", "--n", 32, "--json").stdout)
    assert r["benchmark"] == "simulate" and r["galaxies_per_s_one_core"] > 0 and r["n"] == 32


def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    m = json.loads(clumpnb("demo", "--quick", "--json", "--out", out).stdout)
    assert (out / "report.html").exists() and json.loads((out / "metrics.json").read_text()) == m
    assert m["source"].startswith("simulated") and m["data"]["n_heldout"] == 40 and m["detector"]["epochs"] == 3
    q = m["detector"]["heldout_vs_truth"]
    assert 0 <= q["completeness_ge8"] <= 1 and len(q["completeness_ge8_ci95"]) == 2
    assert q["purity"] is None or 0 <= q["purity"] <= 1          # null (JSON) when nothing passes the threshold
    assert m["detector"]["n_catalog_rows"] == q["n_pred"]           # the catalogue holds the evaluated detections
    assert (out / "catalog.csv").exists()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "seed 0" in html
