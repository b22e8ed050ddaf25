"""Drift checks (components/core/stats/drift.py): the log reader, each test, the verdict, and the false-alarm rate of
the verdict on in-distribution windows measured over repeated windows."""

import json
import time

import numpy as np
import pytest

from components.core.contract.params.monitor import MonitorConfig
from components.core.model import ood
from components.core.stats import drift
from serving.predlog import PredictionLog

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)

    def feats(n, seed):
        y = np.arange(n) % 3
        return np.eye(3, 16)[y] * 5 + np.random.default_rng(seed).normal(0, 1, (n, 16)), y

    ftr, ytr = feats(900, 1)
    fval, yval = feats(300, 2)
    stats = {"mean": rng.normal(110, 15, 900), "std": rng.normal(55, 6, 900),
             "width": rng.integers(900, 2400, 900).astype(float), "height": rng.integers(800, 2200, 900).astype(float)}
    return ood.fit(ftr, ytr, fval, np.eye(3)[yval], CLASSES, 0.05, stats)


def records(ref, n, seed, *, ood_rate=None, mean_shift=0.0, labels=None, version="3", t0=None):
    """Predictions as the server logs them, drawn like the reference (or shifted)."""
    rng = np.random.default_rng(seed)
    scores = rng.choice(ref.val_scores, n)
    if ood_rate is not None:
        scores = np.where(rng.random(n) < ood_rate, ref.threshold * 1.5, ref.threshold * 0.5)
    labels = labels or list(rng.choice(CLASSES, n))
    pick = rng.integers(0, len(ref.stats["mean"]), n)
    out = []
    for i in range(n):
        out.append({"type": "prediction", "request_id": f"{seed:08x}{i:024x}", "ts": (t0 or time.time()) + i * 0.01,
                    "model": {"version": version}, "label": labels[i], "ood_score": float(scores[i]),
                    "unlike_training_data": bool(scores[i] > ref.threshold),
                    "image": {"mean": float(rng.normal(110, 15) + mean_shift), "std": float(rng.normal(55, 6)),
                              "width": float(ref.stats["width"][pick[i]]),
                              "height": float(ref.stats["height"][pick[i]])}})
    return out


def window(recs):
    return drift.Window(recs, 0, 1e12, feedback=sum(1 for r in recs if "truth" in r))


def test_an_in_distribution_window_is_ok(reference):
    s = drift.assess(window(records(reference, 400, 1)), reference, MonitorConfig())
    assert s["verdict"] == "ok" and s["tests"] == 6 and not s["reasons"]
    assert s["checks"]["ood_rate"]["rate"] == pytest.approx(0.05, abs=0.04)
    assert set(s["checks"]["image_drift"]) == {"mean", "std", "width", "height"}


def test_a_drifted_window_is_due_with_reasons(reference):
    recs = records(reference, 300, 2, ood_rate=0.4, mean_shift=35, labels=["COVID19"] * 240 + ["NORMAL"] * 60)
    s = drift.assess(window(recs), reference, MonitorConfig())
    assert s["verdict"] == "retraining_due" and s["significant"] == ["image_drift", "ood_rate", "prediction_drift"]
    text = " ".join(s["reasons"])
    assert "OOD rate" in text and "image mean drifted" in text and "predicted-class shares moved" in text
    only_ood = drift.assess(window(recs), reference, MonitorConfig(retrain_on=["ood_rate"]))
    assert len(only_ood["reasons"]) == 1 and len(only_ood["noted"]) == 2


def test_too_few_predictions_give_no_verdict(reference):
    s = drift.assess(window(records(reference, 10, 3, ood_rate=1.0)), reference, MonitorConfig())
    assert s["verdict"] == "insufficient_data" and "min_predictions" in s["note"]


def test_live_accuracy_and_sensitivity_from_feedback(reference):
    recs = records(reference, 100, 4, labels=["NORMAL"] * 100)
    for i, r in enumerate(recs):
        r["truth"] = "PNEUMONIA" if i % 2 else "NORMAL"  # half the labelled ones are missed pneumonias
    cfg = MonitorConfig(min_live_accuracy=0.8, min_live_sensitivity={"PNEUMONIA": 0.7}, retrain_on=["live_accuracy"])
    s = drift.assess(window(recs), reference, cfg)
    live = s["checks"]["live_accuracy"]
    assert live["n"] == 100 and live["accuracy"] == 0.5 and live["sensitivity"]["PNEUMONIA"]["value"] == 0.0
    assert s["verdict"] == "retraining_due" and len(s["reasons"]) == 2


def test_false_alarm_rate_of_the_verdict_over_repeated_in_distribution_windows(reference):
    """200 independent in-distribution windows of 200 predictions: the share judged 'retraining_due'."""
    cfg = MonitorConfig()
    due = [drift.assess(window(records(reference, 200, 1000 + k)), reference, cfg)["verdict"] == "retraining_due"
           for k in range(200)]
    rate = float(np.mean(due))
    print(f"verdict false-alarm rate on in-distribution windows: {rate:.3f} (200 windows x 200 predictions)")
    assert rate <= 0.03


def test_read_log_rotates_joins_feedback_filters_and_skips_torn_lines(reference, tmp_path):
    log = PredictionLog(tmp_path, max_bytes=4000)
    recs = records(reference, 40, 5)
    for r in recs:
        log.append({k: v for k, v in r.items() if k != "ts"})
    log.append({"type": "prediction", "request_id": "f" * 32, "model": {"version": "9"}, "label": "NORMAL"})
    log.append({"type": "feedback", "request_id": recs[0]["request_id"], "label": "PNEUMONIA"})
    log.close()
    assert len(log.files) > 3  # rotated by size
    with log.files[-1].open("a") as fh:
        fh.write('{"type": "prediction", "request_id": "torn')  # a writer killed mid-line
    now = time.time()
    w = drift.read_log(tmp_path, now - 60, now + 1, version="3")
    assert w.n == 40 and w.other_versions == 1 and w.bad_lines == 1 and w.feedback == 1
    assert w.records[0]["truth"] == "PNEUMONIA" and "pixels" not in json.dumps(w.records)
    assert drift.read_log(tmp_path, now + 10, now + 20).n == 0  # outside the window
    with pytest.raises(Exception, match="not found"):
        drift.read_log(tmp_path / "nope", 0, now)


def test_time_rotation(tmp_path):
    log = PredictionLog(tmp_path, max_seconds=0.05)
    log.append({"type": "feedback", "request_id": "a" * 32, "label": "NORMAL"})
    time.sleep(0.1)
    log.append({"type": "feedback", "request_id": "b" * 32, "label": "NORMAL"})
    log.close()
    assert len(log.files) == 2 and all(p.name.startswith("predictions-") and p.suffix == ".jsonl" for p in log.files)


def test_prediction_drift_weighs_the_validation_split_as_a_sample():
    """40 validation images gave shares 0.5/0.25/0.25; a window of 600 from 0.4/0.3/0.3 is within what 40 images
    could have shown. A goodness-of-fit test against the shares as exact calls it drift; the 2 x K test does not."""
    from scipy.stats import chisquare

    val = {"COVID19": 20, "NORMAL": 10, "PNEUMONIA": 10}
    labels = ["COVID19"] * 240 + ["NORMAL"] * 180 + ["PNEUMONIA"] * 180
    out = drift.check_prediction_drift(labels, val)
    as_exact = chisquare([240, 180, 180], [300, 150, 150]).pvalue
    assert as_exact < 0.001 < 0.2 < out["p_value"] and out["n_reference"] == 40
    assert out["effect"] == pytest.approx(0.1) and out["expected"]["COVID19"] == 0.5
    moved = drift.check_prediction_drift(["COVID19"] * 550 + ["NORMAL"] * 50, val)
    assert moved["p_value"] < 0.001  # a real move is still found


def test_live_sensitivity_is_that_of_the_served_decision_not_the_argmax(reference):
    recs = records(reference, 40, 7, labels=["NORMAL"] * 40)
    for i, r in enumerate(recs):
        r["truth"] = "PNEUMONIA"
        r["decision"] = {"COVID19": False, "PNEUMONIA": i % 4 != 0}  # flagged at the operating threshold
    live = drift.check_live_accuracy(window(recs), CLASSES, 30)
    assert live["accuracy"] == 0.0  # the argmax label was NORMAL every time
    assert live["sensitivity"]["PNEUMONIA"]["value"] == 0.75 and live["sensitivity"]["PNEUMONIA"]["of"] == \
        "served decision"
