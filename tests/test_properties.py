"Property-based tests (hypothesis) of the simulator's invariants and the loaders' round trips."
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from hypothesis import HealthCheck, given, settings, strategies as st

from clumpnb.core import DataError
from clumpnb.data.dataset import dihedral
from clumpnb.data.clumpscout import clump_pixels, clumpscout_rows, read_clumpscout, write_clumpscout
from clumpnb.data.io import coco_dict, read_coco, read_cutout, write_coco, write_cutout
from clumpnb.core import CONFIRM_SEEDS, RETIRED_SEEDS
from clumpnb.data.shifts import SHIFTS
from clumpnb.data.galaxy import SimConfig
from clumpnb.data.simulate import simulate, simulate_galaxy
from clumpnb.data.survey import SDSS

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**31 - 1).filter(lambda s: s not in CONFIRM_SEEDS + RETIRED_SEEDS)  # refused by the simulator
indices = st.integers(0, 10**6)
sizes = st.sampled_from([64, 96, 128, 160])


@FAST
@given(seeds, indices, sizes)
def test_clumps_inside_image_and_off_centre(seed, index, size):
    g = simulate_galaxy(seed, index, SimConfig(size=size))
    assert g.image.shape == (3, size, size) and g.image.dtype == np.float32
    assert np.isfinite(g.image).all()
    x, y = np.asarray(g.clumps["x"]), np.asarray(g.clumps["y"])
    assert ((x >= 0) & (x <= size - 1) & (y >= 0) & (y <= size - 1)).all()
    r = np.hypot(x - g.meta["x"], y - g.meta["y"])
    assert (r >= 1.5 * SDSS.psf_fwhm_px[1] - 1e-9).all()
    assert len(g.clumps) <= 8
    fr = np.asarray(g.clumps["frac_g"])
    assert ((fr >= 0.02 - 1e-9) & (fr <= 0.25 + 1e-9)).all()
    # normal clumps are bluer (g - r) than their disc: they hold more of the galaxy's g than of its r light
    normal = np.asarray(g.clumps["cls"]) == 1
    if normal.any():
        assert np.median(np.asarray(g.clumps["frac_g"])[normal] / np.asarray(g.clumps["frac_i"])[normal]) > 1


@FAST
@given(seeds, indices)
def test_flux_conserved_within_noise(seed, index):
    cfg = SimConfig(star_fraction=0, bg_fraction=0)
    g = simulate_galaxy(seed, index, cfg, keep_model=True)
    for b, band in enumerate("gri"):
        total = g.meta[f"flux_{band}"]
        assert 0.9 * total < g.model[b].sum() <= 1.001 * total, (band, g.model[b].sum(), total)
        var = SDSS.sky_sigma[b] ** 2 + np.clip(g.model[b], 0, None) / SDSS.gain[b]
        assert abs(g.image[b].sum() - g.model[b].sum()) < 5 * np.sqrt(var.sum())
    # clump fluxes add up to their share of the galaxy
    assert np.allclose(np.asarray(g.clumps["flux_g"]).sum() / g.meta["flux_g"], np.asarray(g.clumps["frac_g"]).sum())


@settings(max_examples=5, deadline=None)
@given(seeds, st.integers(0, 200))
def test_seed_determinism_across_batches_and_workers(seed, start):
    alone = simulate_galaxy(seed, start + 2)
    batch = list(simulate(4, seed, start=start))[2]
    assert np.array_equal(alone.image, batch.image)
    assert list(alone.clumps["x"]) == list(batch.clumps["x"])


def test_parallel_equals_serial():
    a = [g.image for g in simulate(6, seed=5, workers=1)]
    b = [g.image for g in simulate(6, seed=5, workers=2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@FAST
@given(seeds, indices, st.booleans())
def test_fits_round_trip(seed, index, per_band):
    g = simulate_galaxy(seed, index, SimConfig(size=64))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        if per_band:
            paths = [d / f"{b}.fits" for b in "gri"]
            for b, p in enumerate(paths): fits.PrimaryHDU(g.image[b], header=g.header).writeto(p)
            c = read_cutout(paths)
        else:
            write_cutout(g, d / "g.fits"); c = read_cutout(d / "g.fits")
            assert np.array_equal(np.asarray(c.clumps["x"]), np.asarray(g.clumps["x"]))
        assert np.array_equal(c.image, g.image)
        ra, dec = g.wcs.wcs_pix2world([[10.0, 20.0]], 0)[0]
        assert np.allclose(c.wcs.wcs_world2pix([[ra, dec]], 0)[0], [10, 20], atol=1e-6)


@FAST
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 63)), min_size=1, max_size=10, unique=True), st.sampled_from(["mask", "reject"]))
def test_nonfinite_pixels(pixels, policy):
    g = simulate_galaxy(0, 1, SimConfig(size=64))
    im = g.image.copy()
    for y, x in pixels: im[1, y, x] = np.nan
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "nan.fits"; fits.PrimaryHDU(im, header=g.header).writeto(p)
        if policy == "reject":
            with pytest.raises(DataError, match=r"data\[r\]"): read_cutout(p, nonfinite="reject")
        else:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                c = read_cutout(p)
            assert np.isfinite(c.image).all() and any(f"{len(pixels)} non-finite" in str(o.message) for o in w)


box = st.tuples(st.floats(0, 120), st.floats(0, 120), st.floats(0.5, 20), st.floats(0.5, 20))


@FAST
@given(st.lists(st.tuples(st.integers(1, 3), box, st.sampled_from([1, 2])), max_size=20))
def test_coco_round_trip(anns):
    images = [{"file_name": f"g{i}.fits", "width": 128, "height": 128} for i in range(3)]
    d = coco_dict(images, [{"image_id": i, "bbox": list(b), "cls": c} for i, b, c in anns])
    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "a.json"; write_coco(d, p)
        back = read_coco(p)
    assert back == json.loads(json.dumps(d))


@FAST
@given(st.integers(0, 3), st.floats(-5, 0))
def test_coco_rejects_degenerate_boxes(i, w):
    images = [{"file_name": "g.fits", "width": 128, "height": 128}]
    d = coco_dict(images, [{"image_id": 1, "bbox": [1, 1, 4, 4]} for _ in range(4)])
    d["annotations"][i]["bbox"][2] = w
    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "a.json"; write_coco(d, p)
        with pytest.raises(DataError, match=rf"annotations\[{i}\]\.bbox"): read_coco(p)


@settings(max_examples=8, deadline=None)
@given(seeds, indices)
def test_mrt_round_trip(seed, index):
    g = simulate_galaxy(seed, index)
    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "cat_mrt.txt"; write_clumpscout(clumpscout_rows(g, 1237648720693755918), p)
        px = clump_pixels(read_clumpscout(p), g.wcs, (128, 128), 1237648720693755918, path=p)
    assert np.allclose(px["x"], g.clumps["x"], atol=0.01) and np.allclose(px["y"], g.clumps["y"], atol=0.01)
    assert list(px["cls"]) == list(g.clumps["cls"])


@FAST
@given(st.integers(0, 3), st.booleans(), st.integers(4, 12), st.integers(4, 12))
def test_dihedral_keeps_boxes_on_pixels(k, flip, H, W):
    im = torch.zeros(1, H, W); ys, xs = torch.randint(H, (3,)), torch.randint(W, (3,))
    im[0, ys, xs] = 1
    boxes = torch.stack([xs, ys, xs + 1, ys + 1], 1).float()
    im2, b2 = dihedral(im, boxes, k, flip)
    assert im2.sum() == im.sum()
    for b in b2:  # every box covers a lit pixel
        assert im2[0, int(b[1]), int(b[0])] == 1 and (b[2] - b[0]) == 1 and (b[3] - b[1]) == 1


SHIFT_NAMES = st.sampled_from(sorted(k for k, v in SHIFTS.items() if v.host_sizes is None and not v.dust))  # same
# cutout, same disc: a disc turned edge-on behind dust has its own test


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seeds, indices, sizes, SHIFT_NAMES)
def test_shifted_imaging_keeps_the_galaxy(seed, index, size, name):
    """Under any shift: the same clumps (a spiral host's may move onto its arms, or onto a ring or tidal tails), inside
    the image; the same light (plus a companion's, where the shift adds one), within what wider PSFs spread out and
    tidal tails lay on the canvas's margin rather than on the cutout (measured: up to 4% of the light at 64 px)."""
    base = SimConfig(size=size, star_fraction=0, bg_fraction=0)
    g0 = simulate_galaxy(seed, index, base, keep_model=True)
    g = simulate_galaxy(seed, index, SimConfig(size=size, star_fraction=0, bg_fraction=0, shift=SHIFTS[name]),
                        keep_model=True)
    moves = SHIFTS[name].spiral or SHIFTS[name].ring or SHIFTS[name].tidal  # clumps may move onto arms, ring, tails
    imaged = ("snr_psf",)  # a clump's PSF signal-to-noise depends on the imaging: it changes with the shift
    kept = [c for c in g0.clumps.colnames if c not in imaged and not (moves and c in ("x", "y", "ra", "dec"))]
    assert g.clumps[kept].as_array().tolist() == g0.clumps[kept].as_array().tolist()
    x, y = np.asarray(g.clumps["x"]), np.asarray(g.clumps["y"])
    assert ((x >= 0) & (x <= size - 1) & (y >= 0) & (y <= size - 1)).all()
    extra = len(g.contaminants) - len(g0.contaminants)  # a companion (the last row) where the shift draws one
    assert extra in ((0, 1) if SHIFTS[name].companion else (0,))
    lo = 0.97 - (0.05 if SHIFTS[name].tidal else 0.0)
    for b in range(3):
        added = float(g.contaminants[f"flux_{'gri'[b]}"][-1]) if extra else 0.0
        assert lo * g0.model[b].sum() + 0.25 * added <= g.model[b].sum() <= 1.03 * g0.model[b].sum() + added, (name, b)
    assert np.isfinite(g.image).all() and g.meta["shift"] == name


@FAST
@given(seeds, indices)
def test_u_band_fractions_match_the_tables(seed, index):
    g = simulate_galaxy(seed, index, SimConfig())
    fu, flux_u = np.asarray(g.clumps["frac_u"]), np.asarray(g.clumps["flux_u"])
    assert np.isfinite(g.meta["flux_u"]) and g.meta["flux_u"] > 0
    assert np.allclose(fu, flux_u / g.meta["flux_u"]) and (flux_u > 0).all() and fu.sum() < 1


@FAST
@given(seeds, indices, sizes, st.sampled_from(["spiral-hosts", "ring-hosts", "tidal-hosts"]))
def test_spiral_ring_and_tidal_hosts_keep_the_placement_rules(seed, index, size, name):
    """Clumps moved onto a host's arms, ring or tidal tails obey the rules they were drawn by: inside, off centre,
    apart; light kept."""
    cfg0 = SimConfig(size=size, noise=False)
    g0 = simulate_galaxy(seed, index, cfg0)
    g = simulate_galaxy(seed, index, SimConfig(size=size, noise=False, shift=SHIFTS[name]))
    fwhm, (cx, cy) = SDSS.psf_fwhm_px[1], (g.meta["x"], g.meta["y"])
    x, y = np.asarray(g.clumps["x"]), np.asarray(g.clumps["y"])
    assert ((x >= 4) & (x <= size - 5) & (y >= 4) & (y <= size - 5)).all()
    assert (np.hypot(x - cx, y - cy) >= 1.5 * fwhm - 1e-9).all()
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) + np.eye(len(x)) * 1e9
    assert (d >= fwhm - 1e-9).all()
    if name == "spiral-hosts":
        assert g.meta["arms"] in (2, 3, 4)
    else:  # a clump either stays where the default put it or sits on the ring or a tail (within 5 of its scatters)
        from clumpnb.data.shifts import draw_morphology
        from clumpnb.data.galaxy import disc_coords
        from clumpnb.data.simulate import draw_params

        p0 = draw_params(seed, index, cfg0)
        p = draw_morphology(SHIFTS[name], p0, SimConfig(size=size, shift=SHIFTS[name]))
        for c0, c in zip(p0["clumps"], p["clumps"]):
            assert (c0["x"], c0["y"]) == (c["x"], c["y"]) or placed_on(p["host"], p["centre"], c, disc_coords)
    lost = 0.03 + (0.05 if name == "tidal-hosts" else 0.0)  # what arms, a ring or tails move onto the margin
    assert abs(g.image.sum() - g0.image.sum()) <= lost * g0.image.sum()


def placed_on(host, centre, c, disc_coords) -> bool:
    "Whether clump `c` sits on `host`'s ring (within 5 of its sigmas) or on a tidal tail (within 5 times 0.05 rad)."
    if "ring" in host:
        return abs(disc_coords(c["x"], c["y"], host, centre)[0] - host["ring"]["r"]) < 5 * host["ring"]["width"]
    t = host["tails"]
    r, th = np.hypot(c["x"] - centre[0], c["y"] - centre[1]), np.arctan2(c["y"] - centre[1], c["x"] - centre[0])
    ridge = t["phase"] + np.log(r / t["r_in"]) / np.tan(t["pitch"])
    off = min(abs(np.angle(np.exp(1j * (th - ridge - k * 2 * np.pi / t["m"])))) for k in range(t["m"]))
    return t["r_in"] <= r <= t["r_out"] and off < 5 * 0.05


@FAST
@given(seeds, indices, sizes)
def test_dusty_edge_on_discs_keep_their_books(seed, index, size):
    """A disc turned edge-on behind a dust lane: its image holds the galaxy flux of its tables, each clump it keeps
    is the default's clump with its g and u flux times the lane's transmission there (so the u colours stay aligned
    when clumps are dropped), every band is dimmed and u more than i (between neighbouring bands the galaxy's layout
    can decide: its redder light sits nearer the centre, behind more dust), and its clumps obey the placement rules."""
    from clumpnb.data.shifts import draw_morphology
    from clumpnb.data.shifts import dust_transmission
    from clumpnb.data.simulate import draw_params

    bare = dict(size=size, star_fraction=0, bg_fraction=0, noise=False)
    cfg = SimConfig(shift=SHIFTS["dusty-edge-on"], **bare)
    g0, g = simulate_galaxy(seed, index, SimConfig(**bare)), simulate_galaxy(seed, index, cfg)
    flux = np.array([g.meta[f"flux_{b}"] for b in "ugri"])
    assert np.allclose(g.image.sum((1, 2)), flux[1:], rtol=0.02)  # within what the PSF spreads past the edge
    p = draw_morphology(SHIFTS["dusty-edge-on"], draw_params(seed, index, cfg), cfg)
    x, y = np.asarray(g.clumps["x"]), np.asarray(g.clumps["y"])
    t = dust_transmission(x, y, p["host"], p["centre"], embedded=True)
    for b, tb in (("u", t[0]), ("g", t[1])):
        assert np.allclose(g.clumps[f"flux_{b}"], np.asarray(g0.clumps[f"flux_{b}"])[p["clumps_kept"]] * tb, rtol=1e-9)
    kept = flux / np.array([g0.meta[f"flux_{b}"] for b in "ugri"])
    assert (kept < 1).all() and kept[0] < kept[3], kept
    fwhm, (cx, cy) = SDSS.psf_fwhm_px[1], (g.meta["x"], g.meta["y"])
    assert ((x >= 4) & (x <= size - 5) & (y >= 4) & (y <= size - 5)).all() and len(x) <= len(g0.clumps)
    assert (np.hypot(x - cx, y - cy) >= 1.5 * fwhm - 1e-9).all()
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) + np.eye(len(x)) * 1e9
    assert (d >= fwhm - 1e-9).all()


@FAST
@given(seeds, indices, sizes)
def test_companions_keep_clear_of_the_clumps_and_the_edge(seed, index, size):
    "A companion is added as the last contaminant, inside the cutout, clear of every clump, in its flux range."
    from clumpnb.data.shifts import draw_morphology
    from clumpnb.data.simulate import draw_params

    cfg = SimConfig(size=size, shift=SHIFTS["companions"])
    p0 = draw_params(seed, index, cfg)
    p = draw_morphology(SHIFTS["companions"], p0, cfg)
    assert p["clumps"] == p0["clumps"] and p["bg_galaxies"][: len(p0["bg_galaxies"])] == p0["bg_galaxies"]
    if p.get("companion"):
        c = p["bg_galaxies"][-1]
        assert 8 <= c["x"] <= size - 9 and 8 <= c["y"] <= size - 9
        assert all(np.hypot(c["x"] - k["x"], c["y"] - k["y"]) >= 2 * SDSS.psf_fwhm_px[1] for k in p["clumps"])
        assert 0.1 <= 10 ** (-0.4 * (c["mag_r"] - p["host"]["mag_r"])) <= 0.6
    else:
        assert p is p0


@FAST
@given(seeds, indices, sizes)
def test_host_sized_cutouts_keep_the_clumps_they_hold(seed, index, size):
    """On a cutout that follows its host: the drawn side, within its bounds; every clump kept is the default's (same
    fluxes and flux ratios, the same place relative to the centre), 4 pixels inside; each dropped one would not be."""
    sh = SHIFTS["host-sizes"]
    g0 = simulate_galaxy(seed, index, SimConfig(size=size))
    g = simulate_galaxy(seed, index, SimConfig(size=size, shift=sh))
    side = g.image.shape[-1]
    assert g.image.shape == (3, side, side) and sh.host_sizes[1] <= side <= sh.host_sizes[2] and side % 2 == 0
    d = (side - size) / 2
    assert np.allclose((g.meta["x"] - d, g.meta["y"] - d), (g0.meta["x"], g0.meta["y"]))
    same = [c for c in g0.clumps.colnames if c not in ("x", "y", "ra", "dec", "snr_psf")]  # S/N: the imaging's
    kept = {(round(r["x"] - d, 6), round(r["y"] - d, 6)): r for r in g.clumps}
    for r0 in g0.clumps:
        inside = 4 <= r0["x"] + d <= side - 5 and 4 <= r0["y"] + d <= side - 5
        r = kept.get((round(r0["x"], 6), round(r0["y"], 6)))
        assert (r is not None) == inside
        if r is not None:
            assert [r[c] for c in same] == [r0[c] for c in same]
    assert len(kept) == len(g.clumps) and np.isfinite(g.image).all()
