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
    from clumpnb.protocol import DEMO_SIZES
    assert f"{DEMO_SIZES['quick'].epochs} epochs" in " ".join(clumpnb("demo", "--help").stdout.split())   # help built from the sizes used
    r = clumpnb("lst", "--source", "moon", "--out", "x", check=False)
    assert r.returncode == 2 and "'moon' is not an image file" in r.stderr and "chelsea" in r.stderr


REFUSE = """
import sys
from clumpnb.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert e.code == 2, e.code
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""


@pytest.mark.parametrize("args", [("detect", "--bogus"), ("train", "--data", "nowhere", "--out", "r"),
                                  ("simulate", "--n", "0", "--out", "s"), ("pretrain", "--lr", "nan", "--out", "p")])
def test_argparse_refusals_import_no_torch(args):
    "Building the parser and refusing a flag import no torch: the refusal takes a fraction of a second, not ten."
    r = subprocess.run([sys.executable, "-c", REFUSE, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "error:" in r.stderr, r.stderr
    assert r.stdout.strip() == "[]", f"imported {r.stdout.strip()}"


def test_lst_on_png_files_and_a_clumpnb_classifier(tmp_path):
    "`clumpnb lst` on a user's own files: two PNGs on the ImageNet model, then a folder on a classifier file."
    import numpy as np
    from PIL import Image
    from clumpnb.nets.encoders import make_classifier
    from clumpnb.nets.training import save_classifier
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name, shape in (("cat.png", (90, 120, 3)), ("cup.PNG", (64, 64, 3))):   # other sizes, upper-case extension
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(imgs / name)
    args = ("--iters", 4, "--width-every", 2, "--width-dirs", 4, "--json", "--precision", "float32")
    r = json.loads(clumpnb("lst", "--source", imgs / "cat.png", "--target", imgs / "cup.PNG", "coffee",
                           "--image-size", 64, "--out", tmp_path / "a", *args).stdout)
    assert [(p["source"], p["target"]) for p in r["pairs"]] == [("cat", "cup"), ("cat", "coffee")]
    assert r["model"].startswith("EfficientNet-Lite0") and r["settings"]["size"] == 64
    assert all(p["accepted"] <= 4 and 0 <= p["line_min_p"] <= 1 for p in r["pairs"]) and len(r["hulls"]) == 1
    assert len((tmp_path / "a" / "pairs.csv").read_text().splitlines()) == 3
    save_classifier(tmp_path / "clf.pt", make_classifier("resnet18", None, 2).eval(), "resnet18", ["smooth", "clumpy"],
                    image_size=48, order="rgb")
    r = json.loads(clumpnb("lst", "--source", imgs, "--target", imgs, "--model", tmp_path / "clf.pt",
                           "--out", tmp_path / "b", *args).stdout)
    assert len(r["pairs"]) == 2 and r["settings"]["size"] == 48 and "clumpy" in r["model"]
    assert (tmp_path / "b" / "lst.png").stat().st_size > 0
    bad = clumpnb("lst", "--model", imgs / "cat.png", "--out", tmp_path / "c", check=False)
    assert bad.returncode == 2 and "cat.png" in bad.stderr and "not a readable classifier file" in bad.stderr


def test_simulate_writes_survey_and_resumes(tmp_path):
    out = tmp_path / "s"
    clumpnb("simulate", "--n", 12, "--seed", 3, "--cutout-size", 96, "--workers", 2, "--out", out)
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
    s = json.loads(clumpnb("simulate", "--n", 12, "--seed", 3, "--size", 96, "--workers", 1, "--out", out, "--json").stdout)
    assert files[5].read_bytes() == before and s["n_clumps"] == len(clumps)   # --size: the old spelling of --cutout-size
    assert len(ClumpDataset(out, labels="consensus")) == 12


def test_bench_gpu_without_a_gpu():
    "Here (no GPU) `bench gpu` says what to do instead of failing on the first CUDA call."
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    r = clumpnb("bench", "gpu", check=False)
    assert r.returncode == 2 and "torch sees no CUDA GPU here; --dry-run" in r.stderr and "Traceback" not in r.stderr


def test_bench_simulate_json():
    r = json.loads(clumpnb("bench", "simulate", "--n", 32, "--json").stdout)
    assert r["benchmark"] == "simulate" and r["galaxies_per_s_one_core"] > 0 and r["n"] == 32


def test_pretrain_then_train_refuses_other_arch(tmp_path):
    pre = tmp_path / "pre"
    s = json.loads(clumpnb("pretrain", "--n", 24, "--epochs", 1, "--crop", 48, "--batch-size", 8, "--workers", 1, "--out", pre, "--json").stdout)
    assert s["simulated"] and (pre / "encoder.pt").exists() and "val_clumpy" in s["final"]
    assert "--resume" in clumpnb("pretrain", "--n", 24, "--epochs", 1, "--crop", 48, "--out", pre, check=False).stderr
    clumpnb("simulate", "--n", 10, "--size", 64, "--workers", 1, "--out", tmp_path / "s")
    r = clumpnb("train", "--data", tmp_path / "s", "--out", tmp_path / "run", "--backbone", "resnet18", "--weights", pre / "encoder.pt", check=False)
    assert r.returncode == 2 and "pretrained as 'efficientnet_lite0'" in r.stderr and "encoder.pt" in r.stderr


def test_compare_tiny_grid_and_bad_preset(tmp_path):
    s = json.loads(clumpnb("compare", "--preset", "tiny", "--out", tmp_path / "g", "--json").stdout)
    assert s["n_runs"] == 6 and s["simulated"]
    rows = (tmp_path / "g" / "results.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("grid,preset,variant")
    assert (tmp_path / "g" / "efficiency.png").stat().st_size > 0
    r = clumpnb("compare", "--preset", "huge", "--out", tmp_path / "h", check=False)
    assert r.returncode == 2 and "invalid choice: 'huge'" in r.stderr and "tiny" in r.stderr
    r = clumpnb("compare", "--preset", "cpu", "--out", tmp_path / "g", check=False)
    assert r.returncode == 2 and "not mixed" in r.stderr


def test_fetch_killed_and_rerun_downloads_each_file_once(tmp_path):
    "The real client, in a real process killed half way, against a local stand-in for SkyServer and the SAS."
    import time
    from astropy.table import Table
    from clumpnb.data.local_sdss import LocalSDSS
    from clumpnb.data.simulate import simulate
    gals = {1237600000000000000 + i: g for i, g in enumerate(simulate(20, seed=0))}
    srv = LocalSDSS(gals)
    try:
        Table(rows=[(str(o), 0, g.meta["ra"], g.meta["dec"]) for o, g in gals.items()], names=("name", "objid", "ra", "dec")).write(
            tmp_path / "t.csv", format="ascii.csv")
        args = [sys.executable, "-m", "clumpnb.cli", "fetch", "--targets", tmp_path / "t.csv", "--out", tmp_path / "o", "--rate", 25,
                "--skyserver", f"{srv.url}/dr17/SkyServerWS", "--sas", f"{srv.url}/sas/dr17/eboss/photoObj/frames"]
        p = subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cut = tmp_path / "o" / "cutouts"
        t0 = time.time()
        while time.time() - t0 < 120 and (not cut.exists() or len(list(cut.glob("*.fits"))) < 8):
            time.sleep(0.05)
        p.kill(); p.wait()
        n_first = len(list(cut.glob("*.fits")))
        assert 8 <= n_first < 20
        assert not list((tmp_path / "o").rglob("*.part"))
        r = clumpnb(*args[3:], "--json")
        rep = json.loads(r.stdout)
        assert rep["n_cutouts"] == 20 and rep["n_new"] >= 20 - n_first - 1
        downloads = {k: v for k, v in srv.served.items() if "SqlSearch" not in k}
        # each frame and JPEG once; the one in flight when the process died may have been sent but never saved, so it comes again
        assert len(downloads) == 20 * 4 and sum(v > 1 for v in downloads.values()) <= 1 and max(downloads.values()) <= 2, sorted(downloads.values())[-3:]
    finally:
        srv.close()


def test_build_dataset_cli_counts_cuts_and_trains(tmp_path):
    from astropy.table import vstack
    from clumpnb.data.clumpscout import clumpscout_rows, write_clumpscout
    from clumpnb.data.io import write_cutout
    from clumpnb.data.simulate import simulate
    (tmp_path / "cut").mkdir()
    rows = []
    for i, g in enumerate(simulate(6, seed=4)):
        write_cutout(g, tmp_path / "cut" / f"cutout-{1237650000000000100 + i}.fits")   # named as other tools name them
        if len(g.clumps): rows.append(clumpscout_rows(g, 1237650000000000100 + i))
    write_clumpscout(vstack(rows), tmp_path / "cat_mrt.txt")
    r = clumpnb("build-dataset", "--catalog", tmp_path / "cat_mrt.txt", "--cutouts", tmp_path / "cut", "--out", tmp_path / "ds")
    assert "| step | galaxies removed | clumps removed | galaxies left | clumps left |" in r.stdout
    assert "| faint | " in r.stdout and "kept" in r.stdout and f"matched by {{'objid': {len(rows)}}}" in r.stdout
    assert len(ClumpDataset(tmp_path / "ds", labels="consensus")) == len(rows)
    from clumpnb.detector.evaluate import load_reference
    ref = load_reference(tmp_path / "ds", "consensus")
    fr = np.concatenate([r["frac"] for r in ref.values()])
    assert len(fr) and np.isfinite(fr).all()     # the flux ratios evaluate bins by, under the name evaluate reads
    clumpnb("train", "--data", tmp_path / "ds", "--out", tmp_path / "run", "--epochs", 1, "--json")
    ev = json.loads(clumpnb("evaluate", "--run", tmp_path / "run", "--data", tmp_path / "ds", "--split", "all",
                            "--json").stdout)
    c = ev["consensus"]
    assert np.isfinite(c["completeness_ge8"]) or np.isfinite(c["completeness_3to8"]), c   # a number, not NaN
    r = clumpnb("build-dataset", "--catalog", tmp_path / "nope_mrt.txt", "--cutouts", tmp_path / "cut", "--out", tmp_path / "ds2", check=False)
    assert r.returncode == 2 and "nope_mrt.txt" in r.stderr and "does not exist" in r.stderr
    r = clumpnb("fetch", "--targets", tmp_path / "cat_mrt.txt", "--out", tmp_path / "f", "--skyserver", "http://127.0.0.1:9/x", "--retries", 0, check=False)
    assert r.returncode == 2 and "fetching needs internet" in r.stderr and "Traceback" not in r.stderr
