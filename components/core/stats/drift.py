"""Drift: a window of the prediction log against the reference saved at training time (``cxr monitor``).

The log is the JSONL files ``cxr serve`` writes (:mod:`serving.predlog`: ``prediction`` records, and
``feedback`` records that join them by ``request_id``); the reference is the model's
:class:`~components.core.model.ood.OodReference`. Each check is a test from :mod:`scipy.stats` plus an effect
size, because with thousands of predictions a test finds differences too small to matter:

==================  ====================================================  ===============================
check               test (window vs reference)                            effect size
==================  ====================================================  ===============================
``ood_rate``        exact one-sided binomial test of the flagged count     the window's OOD rate, against
                    against the false-alarm rate the threshold was set     ``monitor.max_ood_rate``
                    for (or the rate it gave on the validation split,
                    when higher: a small split's quantile is coarse)
``prediction_drift``  chi-square test of homogeneity (2 x K table) of the   total variation distance of the
                    window's predicted-class counts and the validation     class shares
                    split's: the reference shares are an estimate from
                    a few dozen images, not exact
``image_drift``     two-sample Kolmogorov–Smirnov test per image           the KS statistic D
                    statistic (pixel mean and std at the model input;
                    original width and height) against the training split
``live_accuracy``   where feedback exists (>= ``monitor.min_feedback``):   accuracy and per-class
                    accuracy (of the argmax label) and per-class           sensitivity, against
                    sensitivity of the served decision (the record's       ``monitor.min_live_*``
                    ``decision``: probability >= the class's operating
                    threshold; the argmax where none), Wilson 95% CIs
==================  ====================================================  ===============================

A drift is *significant* when its p-value is below ``monitor.drift_p_value`` divided by the number of
tests run (Bonferroni: the family-wise false-alarm rate of a window stays at that level) **and** its
effect exceeds ``monitor.min_effect`` (or ``max_ood_rate`` for the OOD rate). Retraining is due when a
check named in ``monitor.retrain_on`` is significant; with fewer than ``monitor.min_predictions`` in
the window there is no verdict.

Why scipy and not a drift library (Evidently, alibi-detect, NannyML): the four tests above are a few
lines each on top of a dependency the project already pins, and the libraries bring large dependency
trees (and pins of their own) for the same KS and chi-square tests.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.core.contract.errors import DataError

log = logging.getLogger(__name__)

STAT_KEYS = ("mean", "std", "width", "height")
VERDICT_DUE, VERDICT_OK, VERDICT_NONE = "retraining_due", "ok", "insufficient_data"


@dataclass
class Window:
    """The predictions of one window, with the ground truth where feedback arrived."""

    records: list[dict[str, Any]]
    start: float
    end: float
    other_versions: int = 0
    feedback: int = 0
    bad_lines: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.records)

    def column(self, key: str) -> np.ndarray:
        return np.array([r.get(key) for r in self.records], dtype=object)

    def image_stat(self, key: str) -> np.ndarray:
        vals = [(r.get("image") or {}).get(key) for r in self.records]
        return np.array([v for v in vals if isinstance(v, int | float) and math.isfinite(v)], dtype=np.float64)


def read_log(folder: str | Path, start: float, end: float, version: str | None = None) -> Window:
    """Prediction records with ``start <= ts < end`` (of ``version`` when given), joined with their feedback.

    A torn last line (a writer killed mid-line) and foreign lines are skipped and counted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"prediction log folder {folder} not found: point --log at the folder `cxr serve` writes "
                        "(CXR_PREDICTION_LOG / --prediction-log)")
    preds: dict[str, dict] = {}
    truth: dict[str, tuple[float, str]] = {}
    bad, other, files = 0, 0, sorted(folder.glob("predictions-*.jsonl"))
    for path in files:
        if path.stat().st_mtime < start:  # last written before the window: nothing in it, nor feedback for it
            continue
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    kind, rid, ts = rec["type"], rec["request_id"], float(rec["ts"])
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                if kind == "feedback":  # feedback may arrive after the window: any time counts, the latest wins
                    if rid not in truth or truth[rid][0] <= ts:
                        truth[rid] = (ts, str(rec.get("label")))
                elif kind == "prediction" and start <= ts < end:
                    if version and str((rec.get("model") or {}).get("version", "")) != str(version):
                        other += 1
                        continue
                    preds[rid] = rec
    records = []
    for rid, rec in sorted(preds.items(), key=lambda kv: kv[1]["ts"]):
        if rid in truth:
            rec = {**rec, "truth": truth[rid][1]}
        records.append(rec)
    return Window(records, start, end, other_versions=other, feedback=sum(1 for r in records if "truth" in r),
                  bad_lines=bad, files=[p.name for p in files])


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def _r(x: float | None, k: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), k)


def check_ood_rate(flags: np.ndarray, false_alarm: float, max_rate: float) -> dict:
    from scipy.stats import binomtest

    n, k = len(flags), int(np.sum(flags))
    if n == 0:
        return {"n": 0, "rate": None, "p_value": None, "expected": false_alarm, "limit": max_rate}
    p = binomtest(k, n, false_alarm, alternative="greater").pvalue
    return {"n": n, "flagged": k, "rate": _r(k / n), "ci": wilson(k, n), "expected": false_alarm, "limit": max_rate,
            "p_value": _r(p, 6), "effect": _r(k / n), "effect_limit": max_rate}


def check_prediction_drift(labels: list[str], reference_counts: dict[str, float]) -> dict:
    """Window's predicted-class counts against the validation split's (``reference_counts``): a chi-square test
    of homogeneity on the 2 x K table, so the reference's own sampling error counts (a goodness-of-fit test
    against its shares would treat 40 validation images as exact). Classes neither predicted are left out."""
    from scipy.stats import chi2_contingency

    classes = list(reference_counts)
    counts = np.array([sum(1 for x in labels if x == c) for c in classes], dtype=np.float64)
    ref = np.array([float(reference_counts[c]) for c in classes])
    n = counts.sum()
    if n == 0:
        return {"n": 0, "p_value": None}
    keep = (counts + ref) > 0
    table = np.stack([counts[keep], ref[keep]])
    if ref.sum() == 0 or keep.sum() < 2:
        return {"n": int(n), "p_value": None, "note": "no reference counts to compare with"}
    stat, p, _, _ = chi2_contingency(table, correction=False)
    expected = ref / ref.sum()
    tv = 0.5 * float(np.abs(counts / n - expected).sum())
    return {"n": int(n), "n_reference": int(ref.sum()),
            "observed": {c: _r(x / n) for c, x in zip(classes, counts, strict=True)},
            "expected": {c: _r(x) for c, x in zip(classes, expected, strict=True)}, "chi2": _r(float(stat)),
            "p_value": _r(float(p), 6), "effect": _r(tv), "effect_name": "total variation distance",
            "test": "chi-square homogeneity, window vs validation counts"}


def check_image_drift(window: Window, reference: dict[str, np.ndarray]) -> dict:
    from scipy.stats import ks_2samp

    out = {}
    for key in STAT_KEYS:
        ref = np.asarray(reference.get(key, []), dtype=np.float64)
        cur = window.image_stat(key)
        if len(ref) < 5 or len(cur) < 5:
            continue
        res = ks_2samp(cur, ref)
        out[key] = {"n": len(cur), "n_reference": len(ref), "ks": _r(float(res.statistic)),
                    "p_value": _r(float(res.pvalue), 6), "effect": _r(float(res.statistic)),
                    "window_median": _r(float(np.median(cur)), 3), "reference_median": _r(float(np.median(ref)), 3)}
    return out


def _served_positive(record: dict, c: str) -> bool:
    """What the server told the user about class ``c``: its thresholded decision when it has an operating point
    (``decision``), else whether ``c`` was the argmax label."""
    decision = record.get("decision") or {}
    return bool(decision[c]) if c in decision else record.get("label") == c


def check_live_accuracy(window: Window, classes: list[str], min_feedback: int) -> dict:
    labelled = [r for r in window.records if "truth" in r]
    n = len(labelled)
    out: dict[str, Any] = {"n": n, "min_feedback": min_feedback, "enough": n >= min_feedback}
    if not n:
        return out
    right = sum(1 for r in labelled if r.get("label") == r["truth"])
    out.update({"accuracy": _r(right / n), "accuracy_ci": wilson(right, n), "sensitivity": {}})
    for c in classes:
        pos = [r for r in labelled if r["truth"] == c]
        if pos:
            hit = sum(1 for r in pos if _served_positive(r, c))
            served = sum(1 for r in pos if c in (r.get("decision") or {}))
            out["sensitivity"][c] = {"n": len(pos), "value": _r(hit / len(pos)), "ci": wilson(hit, len(pos)),
                                     "of": "served decision" if served == len(pos) else
                                     "argmax label" if served == 0 else f"served decision ({served} of {len(pos)})"}
    return out


def assess(window: Window, reference, cfg) -> dict:
    """Every check, the verdict and its reasons, for ``window`` against ``reference`` (an OodReference)
    with the thresholds of ``cfg`` (the ``monitor`` params)."""
    summary: dict[str, Any] = {"predictions": window.n, "feedback": window.feedback,
                               "other_versions": window.other_versions, "bad_lines": window.bad_lines,
                               "checks": {}, "reasons": [], "significant": []}
    if window.n < cfg.min_predictions:
        summary.update(verdict=VERDICT_NONE, note=f"{window.n} predictions in the window, fewer than "
                       f"monitor.min_predictions={cfg.min_predictions}: no verdict")
        return summary
    checks = summary["checks"]
    flags = np.array([bool(r.get("unlike_training_data")) for r in window.records
                      if r.get("unlike_training_data") is not None])
    # the in-distribution flag rate: the target, or what the threshold really gave on a small validation split
    expected = max(reference.false_alarm, reference.val_flag_rate())
    checks["ood_rate"] = check_ood_rate(flags, expected, cfg.max_ood_rate)
    checks["prediction_drift"] = check_prediction_drift([str(r.get("label")) for r in window.records],
                                                        reference.class_counts())
    checks["image_drift"] = check_image_drift(window, reference.stats)
    checks["live_accuracy"] = check_live_accuracy(window, reference.classes, cfg.min_feedback)
    tests = [checks["ood_rate"], checks["prediction_drift"], *checks["image_drift"].values()]
    n_tests = sum(1 for t in tests if t.get("p_value") is not None)
    alpha = cfg.drift_p_value / max(1, n_tests)
    summary.update(alpha=cfg.drift_p_value, tests=n_tests, alpha_per_test=_r(alpha, 6))

    def significant(t: dict, limit: float) -> bool:
        return t.get("p_value") is not None and t["p_value"] < alpha and (t.get("effect") or 0) > limit

    due: list[tuple[str, str]] = []
    o = checks["ood_rate"]
    if significant(o, cfg.max_ood_rate):
        due.append(("ood_rate", f"OOD rate {o['rate']:.1%} of {o['n']} predictions > monitor.max_ood_rate "
                                f"{cfg.max_ood_rate:.0%} (expected {o['expected']:.0%}; p={o['p_value']:.2g})"))
    pdrift = checks["prediction_drift"]
    if significant(pdrift, cfg.min_effect):
        due.append(("prediction_drift", f"predicted-class shares moved (total variation {pdrift['effect']:.2f}, "
                                        f"p={pdrift['p_value']:.2g}): {pdrift['observed']} vs {pdrift['expected']}"))
    for key, t in checks["image_drift"].items():
        if significant(t, cfg.min_effect):
            due.append(("image_drift", f"image {key} drifted (KS D={t['ks']:.2f}, p={t['p_value']:.2g}; median "
                                       f"{t['window_median']} vs {t['reference_median']} in training)"))
    live = checks["live_accuracy"]
    if live.get("enough"):
        if cfg.min_live_accuracy and live["accuracy"] < cfg.min_live_accuracy:
            due.append(("live_accuracy", f"live accuracy {live['accuracy']:.1%} on {live['n']} labelled predictions "
                                         f"< monitor.min_live_accuracy {cfg.min_live_accuracy:.0%}"))
        for c, floor in cfg.min_live_sensitivity.items():
            s = live["sensitivity"].get(c)
            if s and s["value"] < floor:
                due.append(("live_accuracy", f"live sensitivity for {c} {s['value']:.1%} (n={s['n']}) < {floor:.0%}"))
    summary["significant"] = sorted({k for k, _ in due})
    summary["reasons"] = [text for k, text in due if k in cfg.retrain_on]
    summary["noted"] = [text for k, text in due if k not in cfg.retrain_on]
    summary["verdict"] = VERDICT_DUE if summary["reasons"] else VERDICT_OK
    return summary
