"""A science smoke test that CI can afford: the quick demo's detector, trained for two minutes on this CPU through the
command line as a user runs it, must find clumps on a survey it never saw, and at their true positions on cutouts of
other sizes and another pixel scale. The full demo's numbers are in the detector results chapter; these tests only
guard against a change that leaves everything running but the detector blind."""
import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table

from clumpnb.data.io import read_cutout
from clumpnb.data.survey import SDSS


def clumpnb(*args):
    r = subprocess.run([sys.executable, "-m", "clumpnb.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`clumpnb demo --quick`: a detector trained 10 epochs on 160 simulated galaxies of the clumpscout world (seed 0),
    tested on 60 (seed 1) from the same world and under the variant shift."""
    out = tmp_path_factory.mktemp("science") / "demo"
    return out, json.loads(clumpnb("demo", "--quick", "--json", "--out", out))


def test_the_quick_demo_finds_clumps_on_an_unseen_survey(demo):
    out, m = demo
    assert (out / "report.html").exists() and json.loads((out / "metrics.json").read_text()) == m
    assert m["source"].startswith("simulated") and m["data"]["n_heldout"] == 60 and m["detector"]["epochs"] == 10
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "seed 0" in html
    d = m["detector"]
    q, c = d["heldout_vs_truth_u"], d["heldout_vs_consensus"]
    assert m["data"]["world"] == m["data"]["training_shift"] == "clumpscout"
    assert d["n_catalog_rows"] == d["heldout_vs_truth"]["n_pred"]  # the catalogue holds the evaluated detections
    assert "consensus" in d["threshold_rule"] and d["heldout_oracle_vs_truth_u"]["threshold"] > 0  # oracle beside
    # measured when this test was written (clumpscout world, 10 epochs): against the truth completeness 0.31 of all
    # 135 clumps, purity 0.34 (the volunteers' consensus it learnt from: 0.38 and 0.37); against the consensus 0.52 and
    # 0.58. CPU training is not bit-reproducible, hence the margins; a blind or indiscriminate detector fails them
    assert q["n_true"] >= 100 and q["completeness"] >= 0.2 and q["purity"] is not None and q["purity"] >= 0.25, q
    assert c["completeness"] >= 0.35 and c["purity"] >= 0.4, c
    v = d["heldout_variant_vs_truth_u"]  # the same galaxies drawn, imaged outside the training range
    assert v["n_pred"] > 0, v  # measured: 25 detections, 0.28 pure


LEGACY_SCALE = 0.262  # arcsec per pixel: the DESI Legacy Surveys' cutouts


def legacy_scale_survey(out, n: int, seed: int):
    """Write `n` simulated galaxies imaged at 0.262"/px (same seeing in arcsec, same depth per arcsec^2, so the sky
    noise per pixel shrinks with the pixel's side), 194 px on a side (the sky of an SDSS 128-px cutout)."""
    from dataclasses import replace
    from clumpnb.data.io import write_cutout
    from clumpnb.data.galaxy import SimConfig
    from clumpnb.data.simulate import simulate

    k = LEGACY_SCALE / SDSS.pixel_scale
    survey = replace(SDSS, pixel_scale=LEGACY_SCALE, sky_sigma=tuple(s * k for s in SDSS.sky_sigma))
    out.mkdir()
    for g in simulate(n, seed=seed, cfg=SimConfig(size=194, survey=survey)):
        write_cutout(g, out / f"{g.name}.fits")
    return survey


def recovered(cat, file, x, y, fwhm):
    "Offsets (pixels) from true positions `x`, `y` to the nearest detection in `file`, NaN where none is within `fwhm`."
    rows = cat[cat["file"] == str(file)]
    if not len(rows):
        return np.full(len(x), np.nan)
    dx = np.asarray(rows["x"])[None] - np.asarray(x)[:, None]
    d = np.hypot(dx, np.asarray(rows["y"])[None] - np.asarray(y)[:, None])
    return np.where(d.min(1) <= fwhm, d.min(1), np.nan)


def crop(src, dest, side: int):
    "Write the central `side` x `side` pixels of cutout `src` to `dest`, with its WCS (astropy's Cutout2D)."
    from astropy.io import fits
    from astropy.nddata import Cutout2D

    c = read_cutout(src)
    mid = ((c.image.shape[2] - 1) / 2, (c.image.shape[1] - 1) / 2)
    cuts = [Cutout2D(band, mid, (side, side), wcs=c.wcs) for band in c.image]
    hdus = [fits.ImageHDU(cu.data, cu.wcs.to_header(), name=b) for cu, b in zip(cuts, "GRI")]
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(dest)
    return cuts[0].wcs


def test_clumps_at_their_true_positions_at_other_sizes_and_pixel_scales(demo, tmp_path):
    """The same detector on the same galaxies cut out at 100, 128, 160 and 256 pixels, and on galaxies imaged at the
    Legacy Surveys' 0.262"/px (resampled by `detect`): bright clumps (flux ratio >= 8%) are found within one PSF FWHM
    of their true positions, in each file's own pixels, about as often at every size and scale."""
    clumpnb("simulate", "--n", 40, "--seed", 2, "--cutout-size", 256, "--volunteers", 0, "--out", tmp_path / "s256")
    legacy = legacy_scale_survey(tmp_path / "legacy", 40, seed=2)
    truth, every = {}, {}  # file -> (x, y of clumps with flux ratio >= 8% / of every clump, PSF FWHM) in its pixels
    for f in sorted((tmp_path / "s256" / "cutouts").glob("*.fits")):
        t = read_cutout(f).clumps
        central = (abs(t["x"] - 127.5) < 40) & (abs(t["y"] - 127.5) < 40)  # inside every crop, 10 px from its edges
        for side in (100, 128, 160, 256):
            (tmp_path / f"c{side}").mkdir(exist_ok=True)
            w = crop(f, tmp_path / f"c{side}" / f.name, side)
            x, y = w.world_to_pixel_values(t["ra"], t["dec"])
            bright = central & (t["frac_g"] >= 0.08)
            truth[tmp_path / f"c{side}" / f.name] = (x[bright], y[bright], SDSS.psf_fwhm_px[1])
            every[tmp_path / f"c{side}" / f.name] = (x[central], y[central], SDSS.psf_fwhm_px[1])
    for f in sorted((tmp_path / "legacy").glob("*.fits")):
        t = read_cutout(f).clumps
        truth[f] = (t["x"][t["frac_g"] >= 0.08], t["y"][t["frac_g"] >= 0.08], legacy.psf_fwhm_px[1])
        every[f] = (t["x"], t["y"], legacy.psf_fwhm_px[1])
    folders = [tmp_path / f"c{side}" for side in (128, 100, 160, 256)] + [tmp_path / "legacy"]
    s = json.loads(clumpnb("detect", "--run", demo[0] / "run", *folders, "--out", tmp_path / "cat.ecsv", "--json"))
    assert s["n_read"] == 200 and s["n_skipped"] == 0, s
    cat = Table.read(tmp_path / "cat.ecsv")
    rate, real, offset = {}, {}, {}
    for name, folder in zip(("128 px", "100 px", "160 px", "256 px", '0.262"/px'), folders):
        d = np.concatenate([recovered(cat, f, *truth[f]) for f in truth if f.parent == folder])
        found, fwhm = np.isfinite(d), truth[next(f for f in truth if f.parent == folder)][2]
        rate[name], offset[name] = found.mean(), np.median(d[found]) / fwhm
        assert len(d) >= 25, (name, len(d))
        near = [np.isfinite(recovered(cat[i : i + 1], f, *every[f])).any() for f in every if f.parent == folder
                for i in np.flatnonzero(cat["file"] == str(f))]  # fmt: skip
        real[name] = float(np.mean(near)) if near else 0.0  # detections on a true clump of any flux ratio
    print("found", rate, "median offset / FWHM", offset, "on a clump", real)
    assert all(v < 0.6 for v in offset.values()), offset  # positions in each file's own pixels
    # measured with a detector like this one, trained on the randomised imaging (33 bright clumps in the crops): 0.97
    # at 128 px, 0.91, 0.88 and 0.91 at 100, 160 and 256 px, the same clumps; 0.97 on the 0.262"/px galaxies (34
    # clumps). When this test was written the quick demo trained on the default imaging and found 0.82 at 128 px,
    # 0.76 and 0.79 at 100 and 256 px, and 0.68 at 0.262"/px (0.50 with reproject's default Gaussian kernel, see the
    # detect chapter). The margins allow for CPU training not being bit-reproducible and for the other galaxies at
    # 0.262"/px
    crops = [rate[k] for k in ("100 px", "160 px", "256 px")]
    assert all(r >= 0.5 and abs(r - rate["128 px"]) <= 0.2 for r in crops), rate
    assert rate['0.262"/px'] >= 0.45 and rate['0.262"/px'] >= rate["128 px"] - 0.3, rate
    # and many detections lie on a true clump (any flux ratio): not found by spraying detections. Measured 0.85-0.96
    # with the basic world's quick demo; 0.41-0.43 with the clumpscout world's (trained on a consensus that marks
    # visible knots, it marks disc structure here too), whose median offsets were 0.47-0.51 FWHM and which found
    # 0.64 of the bright clumps at 128, 100 and 160 px, 0.58 at 256 px and 0.76 at 0.262"/px
    assert all(r >= 0.3 for r in real.values()), real
