"""`evaluate_detections` on a fixed detection set gives exactly the metrics it gave when the golden file was written:
the same keys in the same order and the same floats, bootstrap intervals and curve included."""
import json
import math

import numpy as np

from conftest import ROOT
from clumpnb.detector.evaluate import evaluate_detections

GOLDEN = ROOT / "tests" / "data" / "metrics_golden.json"


def detection_set():
    "Eight galaxies of predictions and reference clumps drawn with a fixed seed: empty ones, both classes, NaN ratios."
    rng = np.random.default_rng(1234)
    preds, refs = [], []
    for g in range(8):
        n_true = [0, 1, 3, 5, 2, 4, 6, 0][g]
        txy = rng.uniform(10, 118, (n_true, 2))
        frac = rng.choice([0.01, 0.04, 0.05, 0.06, 0.09, 0.2, np.nan], n_true)
        cls = rng.choice([1, 2], n_true)
        near = txy[rng.random(n_true) < 0.7]  # found clumps, a little off their centres
        far = rng.uniform(0, 128, ([2, 0, 1, 3, 0, 2, 1, 4][g], 2))
        pxy = np.concatenate([near + rng.normal(0, 1.2, near.shape), far]).reshape(-1, 2)
        preds.append(dict(x=pxy[:, 0], y=pxy[:, 1], score=np.round(rng.uniform(0.02, 0.99, len(pxy)), 3)))
        refs.append(dict(x=txy[:, 0], y=txy[:, 1], cls=cls.astype(float), frac=frac))
    return preds, refs


def metrics():
    preds, refs = detection_set()
    return evaluate_detections(preds, refs, threshold=0.4, n_boot=200, seed=3)


def same(a, b) -> bool:
    "Equal as JSON holds them: dicts with the same keys in the same order, lists item by item, NaN equal to NaN."
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def test_metrics_match_the_golden_file():
    got = json.loads(json.dumps(metrics()))  # as a results file holds them
    want = json.loads(GOLDEN.read_text())
    assert list(got) == list(want)
    assert same(got, want)


def test_the_comparison_can_fail():
    want = json.loads(GOLDEN.read_text())
    assert want["n_true"] > 0 and 0 < want["completeness"] < 1 and len(want["curve"]) == 19
    changed = json.loads(GOLDEN.read_text())
    changed["purity"] = math.nextafter(changed["purity"], 2)
    assert not same(changed, want)
    assert not same(dict(reversed(list(want.items()))), want)
    assert not same({**want, "n_true": float(want["n_true"])}, want)
