"""The committed results files the results chapters print from: each must exist, parse, say which command and seed
wrote it, and hold every field its chapter reads. A missing or malformed file fails here, not halfway through a page."""
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parent.parent/"nbs"


@dataclass
class ResultsFile:
    "A JSON results file and the fields (paths `a/b/0/c`) its chapter reads."
    path: str        # relative to nbs/
    fields: tuple    # paths that must be present


TRUTH = ("completeness_ge8", "completeness_ge8_ci95", "completeness_3to8", "completeness_3to8_ci95", "purity",
         "purity_ci95", "completeness_cls1", "completeness_cls2", "n_true_ge8", "n_true_3to8", "coco/AP50")
CONSENSUS = ("purity", "completeness_cls1", "completeness_cls2", "coco/AP50")
QUALITY = ("completeness_ge8", "completeness_3to8", "purity")
QUESTIONS = ("smooth-or-featured", "disk-edge-on", "bulge-size", "clumpy", "foreground-star", "companion")

JSON_FILES = [
    ResultsFile("detector/results/demo_seed0.json",
                ("metrics/data/world", "metrics/data/heldout_shift", "metrics/data/consensus_recovery_u/0/recovery",
                 "metrics/data/census_shares_u/simulated/1", "metrics/data/census_shares_u/published/1",
                 "metrics/detector/threshold_rule", "metrics/detector/heldout_oracle_vs_truth_u/threshold",
                 "metrics/detector/heldout_cut_vs_truth_u/purity", "metrics/detector/selection/0/completeness",
                 "metrics/detector_seeds/threshold_rule", "metrics/detector_seeds/rows/2/train_seed",
                 "metrics/detector_seeds/summary/oracle_threshold/mean", "metrics/detector_seeds/summary/threshold/max")),
    ResultsFile("detector/results/demo_seed0_basic.json",
                ("metrics/source", "metrics/data/n_train_survey", "metrics/data/n_heldout", "metrics/data/heldout_seed",
                 "metrics/data/consensus_10_volunteers/purity",
                 "metrics/data/consensus_10_volunteers/completeness_0.03-0.08",
                 "metrics/data/consensus_10_volunteers/completeness_0.08-1",
                 "metrics/detector/backbone", "metrics/detector/weights", "metrics/detector/epochs",
                 "metrics/detector/n_train_galaxies", "metrics/detector/threshold", "metrics/detector/train_seconds",
                 "metrics/detector/train_images_per_s", "metrics/detector/post_removed", "metrics/seconds/total")
                + tuple(f"metrics/detector/heldout_vs_truth/{k}" for k in TRUTH)
                + tuple(f"metrics/detector/heldout_vs_truth_u/{k}" for k in TRUTH[:4] + ("n_true_ge8", "n_true_3to8"))
                + tuple(f"metrics/detector/heldout_vs_consensus/{k}" for k in CONSENSUS)
                + ("metrics/data/training_shift", "metrics/data/heldout_variant_shift")
                + tuple(f"metrics/detector/heldout_variant_vs_truth/{k}" for k in TRUTH)
                + tuple(f"metrics/detector/heldout_variant_vs_truth_u/{k}" for k in TRUTH[:4] + ("n_true_ge8",))),
    ResultsFile("detector/results/confirm_detector.json",
                ("simulated", "settings/n_train", "settings/n_test", "settings/epochs", "n_true_clumps",
                 "rows/0/train_seed", "rows/0/threshold", "rows/2/train_seed",
                 "consensus_10_volunteers/purity", "consensus_10_volunteers/completeness_0.03-0.08",
                 "consensus_10_volunteers/completeness_0.08-1")
                + tuple(f"rows/0/truth/{k}" for k in TRUTH)),
    ResultsFile("detector/results/data_efficiency.json",
                ("runs/0/n_train", "runs/0/epochs", "runs/0/threshold", "runs/0/truth/completeness_ge8",
                 "runs/0/truth/completeness_3to8", "runs/0/truth/purity")),
    ResultsFile("detector/results/bench_detector.json",
                tuple(f"bench/{k}" for k in ("size", "batch", "backbone", "threads", "device", "train_speedup",
                                             "inference_speedup"))
                + tuple(f"bench/{k}" for k in ("train_over_previous", "inference_over_previous"))
                + tuple(f"bench/{c}/{k}" for c in ("clumpnb", "previous_defaults", "torchvision_defaults")
                        for k in ("train_images_per_s", "inference_images_per_s", "peak_rss_mb"))),
    ResultsFile("detector/results/bench_quality.json",
                tuple(f"bench/{k}" for k in ("demo_command", "seed", "epochs", "heldout_seed", "n_heldout"))
                + tuple(f"bench/default_inside_previous_ci95/{k}" for k in QUALITY)
                + tuple(f"bench/{r}/{k}" for r in ("default", "previous")
                        for k in QUALITY + tuple(f"{q}_ci95" for q in QUALITY) + ("threshold", "ap50", "n_true_ge8"))),
    ResultsFile("detector/results/bench_detect.json",
                tuple(f"bench/{k}" for k in ("n", "n_serial", "workers", "device", "model_images_per_s",
                                             "staged_over_serial"))
                + tuple(f"bench/{r}/{k}" for r in ("serial", "staged")
                        for k in ("pipeline_images_per_s", "startup_s", "clumps_per_image", "stage_share/phot",
                                  "stage_share/read"))),
    ResultsFile("data/results/bench_simulate.json",
                ("bench/n", "bench/workers", "bench/galaxies_per_s_one_core", "bench/survey_write_s")
                + tuple(f"bench/shifted/{s}/{k}" for s in ("randomised", "variant")
                        for k in ("galaxies_per_s_one_core", "survey_write_s"))),
    ResultsFile("detector/results/bench_detect_memory.json",
                ("bench/memory_ratio",) + tuple(f"bench/memory/{i}/{k}" for i in (0, 1)
                                                for k in ("n_listed", "side", "peak_rss_mb", "wall_s"))),
    ResultsFile("detector/results/robustness.json",
                ("command", "clumpnb_version", "n", "seed", "simulated", "runs/3", "shifts/12",
                 "rows/36/without_canvas/u/completeness_ge8", "rows/51/purity", "rows/51/u/completeness_ge8")
                + tuple(f"rows/{i}/{k}" for i in (0, 35) for k in ("shift", "run", "threshold", "completeness_ge8",
                                                                   "completeness_ge8_ci95", "completeness_3to8",
                                                                   "purity", "purity_ci95", "n_true_ge8",
                                                                   "n_true_3to8"))),
    ResultsFile("detector/results/bench_gpu.json",
                ("bench/device", "bench/dry_run", "bench/failed", "bench/seconds", "bench/cpu_count", "bench/workers",
                 "bench/sizes/n_train", "bench/detector/batch", "bench/training/epoch", "bench/training/images_per_s",
                 "bench/training/val_completeness_ge8", "bench/training/val_purity",
                 "bench/cuda_cells")
                + tuple(f"bench/detector/{c}/{k}" for c in ("clumpnb", "torchvision_defaults")
                        for k in ("train_images_per_s", "inference_images_per_s"))
                + tuple(f"bench/{d}/{k}" for d in ("detect", "detect_small")
                        for k in ("n", "n_serial", "workers", "model_images_per_s", "staged_over_serial",
                                  "pipeline_over_model"))
                + tuple(f"bench/{d}/{r}/{k}" for d in ("detect", "detect_small") for r in ("serial", "staged")
                        for k in ("pipeline_images_per_s", "call_images_per_s", "startup_s", "clumps_per_image",
                                  "stage_share/read", "stage_share/phot"))
                + tuple(f"bench/lst/{k}" for k in ("device", "pairs", "size", "speedup", "speedup_bf16",
                                                   "s_per_pair_iteration", "s_per_pair_iteration_reference"))),
    ResultsFile("blindspots/results/imagenet_lst.json",
                ("settings/names", "settings/eta", "settings/iters", "settings/pthresh", "settings/adv_step",
                 "settings/size", "settings/model", "seconds", "seconds_per_pair_iteration", "pairs/0/rms",
                 "pairs/0/accepted", "pairs/0/p_target_final", "pairs/0/line_min_p", "hulls/0/hull_mean",
                 "widths/0/q05", "widths/0/radii")),
    ResultsFile("blindspots/results/bench_lst.json",
                tuple(f"bench/{k}" for k in ("s_per_pair_iteration_reference", "s_per_pair_iteration",
                                             "s_per_pair_iteration_bf16", "speedup", "speedup_bf16", "pairs", "size",
                                             "check_iterations", "threads"))
                + tuple(f"bench/agreement/{v}/{k}" for v in ("float32", "bfloat16")
                        for k in ("decisions_agree", "max_abs_difference"))),
    ResultsFile("blindspots/results/reference_check.json",
                tuple(f"rows/{i}/{k}" for i in range(4) for k in ("fit", "loop", "p0", "p_final", "rms", "line_min_p"))),
    ResultsFile("blindspots/results/lst_chelsea_coffee/metrics.json",
                ("model", "settings/iters", "settings/pthresh", "settings/precision", "seconds", "pairs/0/accepted",
                 "pairs/0/p0", "pairs/0/min_accepted_p", "pairs/0/p_final", "pairs/0/p_target_final", "pairs/0/rms",
                 "pairs/0/rms_start", "pairs/0/ssim", "pairs/0/line_min_p", "widths/0/q05")),
    ResultsFile("blindspots/results/galaxy_encoder/pretrain.json",
                ("arch", "n_train", "config/init", "config/seed", "config/epochs", "final/val_clumpy",
                 "final/val_smooth-or-featured")),
    *[ResultsFile(f"comparison/pretrain_{name}.json",
                  ("command", "arch", "n_train", "config/init", "config/drop", "config/epochs", "config/seed")
                  + tuple(f"final/val_{q}" for q in QUESTIONS if q != "clumpy" or "noclumpy" not in name))
      for name in ("lite0-imagenet-votes", "lite0-imagenet-votes-noclumpy")],
    ResultsFile("comparison/confirm_backbones.json",
                ("command", "seed", "grid", "n_test", "rows/0/variant", "rows/0/n_train", "rows/0/seed",
                 "rows/0/threshold", "rows/0/completeness_ge8", "rows/0/completeness_3to8", "rows/0/purity",
                 "rows/0/ap50", "needed_for_0p8")),
    ResultsFile("comparison/pretrain_cpu.json",
                ("arch", "n_train", "n_val", "config/seed", "config/crop", "config/epochs", "config/n", "config/arch",
                 "history/0/seconds")
                + tuple(f"{k}/val_{q}" for k in ("final", "history/0") for q in QUESTIONS)
                + tuple(f"final/val_{q}_vs_truth" for q in QUESTIONS)),
]


def lookup(d, where:str):
    "The value at a path (`a/b/0/c`) in nested dicts and lists; KeyError naming the path when absent."
    for part in where.split("/"):
        if isinstance(d, list):
            if not part.isdigit() or int(part) >= len(d):
                raise KeyError(where)
            d = d[int(part)]
        elif isinstance(d, dict) and part in d:
            d = d[part]
        else:
            raise KeyError(where)
    return d


def provenance(path:Path) -> dict:
    "The command and seed of a results file: inside it, or in provenance.json next to it (the comparison grids)."
    d = json.loads(path.read_text()) if path.suffix == ".json" else {}
    if "command" in d:
        return d
    prov = json.loads((path.parent/"provenance.json").read_text())
    return next(f for f in prov["files"] if f["file"] == path.name)


@pytest.mark.parametrize("rf", JSON_FILES, ids=[f.path for f in JSON_FILES])
def test_json_results(rf):
    path = NBS/rf.path
    assert path.exists(), f"{path} is missing: the chapter prints from it"
    d = json.loads(path.read_text())
    p = provenance(path)
    assert p["command"] and "seed" in p, f"{path}: no command or seed"
    for field in rf.fields:
        try:
            lookup(d, field)
        except KeyError:
            pytest.fail(f"{path}: field {field!r} missing")
    assert "/tmp/" not in path.read_text() and "/work/" not in path.read_text(), f"{path}: holds a machine path"


def test_lst_summary_reads():
    from clumpnb.blindspots.geometry import lst_command, read_lst_summary
    s = read_lst_summary(NBS/"blindspots/results/imagenet_lst.json")
    assert len(s.pairs) == len(s.settings["names"])*(len(s.settings["names"]) - 1)
    assert s.command.startswith("python -c") and s.clumpnb_version
    # the recorded command is the one today's code writes for these settings, so it reruns as it reads
    assert s.command == lst_command(s.settings, "nbs/blindspots/results/imagenet_lst.json")


@pytest.mark.parametrize("name,preset", [("results_cpu.csv", "cpu"), ("results_cpu_small.csv", "cpu-small"),
                                         ("results_cpu_pairs.csv", "cpu-pairs")])
def test_comparison_grids(name, preset):
    from clumpnb.comparison.compare import read_results, get_preset, COLUMNS
    path = NBS/"comparison"/name
    assert path.exists(), f"{path} is missing: the chapter prints from it"
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert set(COLUMNS) <= set(header), f"{path}: columns {sorted(set(COLUMNS) - set(header))} missing"
    rows = read_results(path, get_preset(preset).digest())       # refuses rows of another grid
    assert rows, f"{path}: no rows"
    p = provenance(path)
    assert p["command"].count("clumpnb compare") == 1 and f"--preset {preset} " in p["command"]
    assert {r["seed"] for r in rows} == set(p["seed"]) and p["grid"] == get_preset(preset).digest()


def test_galaxy_results_read(monkeypatch):
    from clumpnb.blindspots import galaxy
    r = galaxy.read_galaxy_results(NBS/"blindspots/results/galaxies_seed0.json")
    assert r.command.startswith("clumpnb pretrain --arch efficientnet_lite0 --init imagenet") and r.seed == 0
    # the recorded command is the one today's code writes for these settings; its pretraining part is read from the
    # encoder file, which is not committed, so the recorded one stands in for it
    pretraining = r.command.split(" && ")[0]
    monkeypatch.setattr(galaxy, "pretrain_command", lambda encoder: pretraining)
    assert r.command == galaxy.galaxy_command(r.settings, "nbs/blindspots/results/galaxies_seed0.json")
    seeds = r.settings["seeds"]
    assert [(row.init, row.train_seed) for row in r.rows] == [(i, s) for i in ("imagenet", "galaxy") for s in seeds]


def confirm_seed_ok(d: dict, part: str) -> bool:
    """A confirm file is either superseded (on a retired seed, labelled so) or the look of the committed registration,
    on the seed it registered."""
    from clumpnb.confirm import CONFIRM_PARTS
    from clumpnb.core import RETIRED_SEEDS
    if "registration" not in d:
        return d["seed"] == RETIRED_SEEDS[CONFIRM_PARTS.index(part)] and d["superseded"].startswith("Superseded:")
    reg = json.loads((NBS / "registration.json").read_text())
    return d["registration"] == reg["digest"] and d["seed"] == reg["settings"]["seeds"][part]


def test_confirmatory_results_read():
    "The confirm files: written by `clumpnb confirm` on the confirmatory seeds, with the development settings."
    from clumpnb.blindspots.galaxy import read_galaxy_results
    dev = read_galaxy_results(NBS/"blindspots/results/galaxies_seed0.json")
    r = read_galaxy_results(NBS/"blindspots/results/confirm_galaxies.json")
    raw = json.loads((NBS/"blindspots/results/confirm_galaxies.json").read_text())
    assert r.command.startswith("clumpnb confirm --only blindspots") and confirm_seed_ok(raw, "blindspots")
    assert r.settings == dev.settings | {"test_seed": r.seed}
    assert [(row.init, row.train_seed) for row in r.rows] == [(row.init, row.train_seed) for row in dev.rows]
    d = json.loads((NBS/"detector/results/confirm_detector.json").read_text())
    assert d["command"].startswith("clumpnb confirm --only detector") and confirm_seed_ok(d, "detector")
    assert [row["train_seed"] for row in d["rows"]] == [0, 1, 2]
    b = json.loads((NBS/"comparison/confirm_backbones.json").read_text())
    from clumpnb.comparison.compare import get_preset, read_results
    p = get_preset("cpu-pairs")
    grid = read_results(NBS/"comparison/results_cpu_pairs.csv", p.digest())
    assert b["command"].startswith("clumpnb confirm --only backbones") and confirm_seed_ok(b, "backbones")
    assert b["grid"] == p.digest() and b["n_test"] == p.test_survey["n"]
    key = lambda r: (r["variant"], r["n_train"], r["seed"], r["threshold"])  # noqa: E731
    assert sorted(map(key, b["rows"])) == sorted(map(key, grid))  # every grid run, at its own threshold


def test_committed_registration_is_sealed():
    "The committed registration: written by `clumpnb register`, unedited (its digest), on today's confirmatory seeds."
    from clumpnb.confirm import _body
    from clumpnb.core import CONFIRM_SEEDS, RETIRED_SEEDS, json_digest
    reg = json.loads((NBS / "registration.json").read_text())
    assert reg["command"].startswith("clumpnb register") and json_digest(_body(reg)) == reg["digest"]
    assert sorted(reg["settings"]["seeds"].values()) == sorted(CONFIRM_SEEDS)
    assert not set(CONFIRM_SEEDS) & set(RETIRED_SEEDS)


def test_the_demo_headline_has_every_yardstick():
    "The seeds' summary (keys `yardstick/metric`, which a path cannot name) holds what the results chapter prints."
    summary = json.loads((NBS / "detector/results/demo_seed0.json").read_text())["metrics"]["detector_seeds"]["summary"]
    want = [f"{y}/{k}" for y in ("truth_u", "cut", "oracle") for k in ("completeness_ge8", "completeness_3to8", "purity")]
    want += ["consensus/completeness", "consensus/purity"]
    missing = [k for k in want if k not in summary or not {"mean", "min", "max", "n"} <= set(summary[k])]
    assert not missing, missing
    assert all(summary[k]["n"] == 3 for k in want), {k: summary[k]["n"] for k in want}
