"""The gate's statistics: the clean comparison ground's verdict, paired non-inferiority, the served decision.

* **Clean ground** (:func:`components.core.data.lineage.comparison_ground`, from each model's lineage record):
  candidate and champion are compared only on test patients that neither of them trained or validated on.
  Fewer than ``gate.min_comparison_patients`` left, or a champion without lineage, makes the comparison
  *incomparable*, and ``gate.on_incomparable`` decides (:func:`incomparable_check`).
* **Paired non-inferiority** (:mod:`components.core.stats.comparison`): per gated metric, an interval of
  (candidate - champion) on the same patients that does not collapse when the models agree (Tango's score
  interval for paired proportions, MOVER for AUCs and macro F1); the check passes when its lower bound is above
  ``-margin``, the candidate is *superior* when it is above 0, an interval entirely below 0 fails, and one that
  cannot tell while the comparison is underpowered (for two equal models, all checks together pass with less
  than ``gate.min_power``) is *inconclusive* (``gate.on_underpowered`` decides).
* **The served decision.** The absolute thresholds read the sensitivity and specificity of the thresholded
  decision at the candidate's own operating points (chosen on its validation split), i.e. what ``cxr serve``
  returns; the comparison with the champion reads the ranking (paired ROC-AUC per class with an operating
  point), not decisions at thresholds moved on the comparison patients (their noise would be left out).
"""

from __future__ import annotations

import numpy as np

from components.core.stats.clinical import conformal_threshold, patient_resamples


def operating_point_guarantees(y_val: np.ndarray, proba_val: np.ndarray, patients: np.ndarray, classes: list[str],
                               targets: dict[str, float], resamples: int, seed: int, level: float) -> dict[str, dict]:
    """What each served threshold promises (:func:`components.core.stats.clinical.conformal_threshold`: the exact
    threshold, the expected out-of-sample sensitivity and its lower bound) and how much the threshold itself
    moves when the validation patients are resampled (``ci``; reported, no check uses it)."""
    out = {}
    for c, target in targets.items():
        i = classes.index(c)
        chosen = conformal_threshold(proba_val[:, i], y_val == i, patients, target, level, name=c)
        if chosen is None:
            continue
        values = []
        for idx, ids in patient_resamples(patients, resamples, seed, draw_ids=True):
            hit = y_val[idx] == i
            n = len(np.unique(ids[hit]))  # a patient drawn twice is two patients of the resample
            if n and int(np.ceil(target * (n + 1) - 1e-9)) <= n:
                scores = proba_val[idx, i][hit]
                values.append(conformal_threshold(scores, np.ones(len(scores), bool), ids[hit], target,
                                                  level)["threshold"])
        ci = None
        if len(values) >= 10:
            lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
            ci = (round(float(lo), 6), round(float(hi), 6))
        out[c] = {**chosen, "target_sensitivity": target, "ci": ci,
                  "gated": False, "note": "reported, not gated: the absolute thresholds check the served sensitivity "
                  "on test patients; expected_sensitivity and sensitivity_lower_bound are what the rank promises"}
    return out


# ---------------------------------------------------------------- checks
def threshold_checks(cand_stats: dict[str, dict], gate, patients: int) -> list[dict]:
    """``gate.min_*`` on the candidate's served metrics (lower CI bounds with ``gate.use_lower_ci``); each check
    says how many patients it rests on (positive patients for sensitivity, negative ones for specificity)."""
    wanted = {"accuracy": gate.min_accuracy, "macro_f1": gate.min_macro_f1, "macro_roc_auc": gate.min_roc_auc,
              **{f"sensitivity.{c}": v for c, v in gate.min_sensitivity.items()},
              **{f"specificity.{c}": v for c, v in gate.min_specificity.items()}}
    checks = []
    for metric, minimum in wanted.items():
        stat = cand_stats.get(metric) or {}
        point, ci = stat.get("point"), stat.get("ci")
        value = (ci[0] if ci else None) if gate.use_lower_ci else point
        count = stat.get("count", "patients")
        label = f"{metric} {'lower CI bound ' if gate.use_lower_ci else ''}>= {minimum}"
        checks.append({"check": label, "kind": "threshold", "metric": metric, "value": value, "point": point,
                       "ci": list(ci) if ci else None, "threshold": minimum,
                       "patients": stat.get("patients", patients), "count": count,
                       "passed": value is not None and value >= minimum})
    return checks


def incomparable_check(ground: dict, on_incomparable: str) -> dict:
    what_to_do = ("Evaluate on patients the champion never saw: keep split.seed and the data the champion was "
                  "trained on and add new patients, or hold out an external set; or set "
                  "gate.on_incomparable: thresholds_only to decide on the absolute thresholds alone.")
    passed = on_incomparable == "thresholds_only"
    return {"check": f"comparison with the champion: incomparable ({ground['reason']})", "kind": "comparison",
            "metric": "comparison", "value": ground["patients_used"], "threshold": ground["min_comparison_patients"],
            "patients": ground["patients_used"], "passed": passed,
            "note": "decided on the absolute thresholds only (gate.on_incomparable: thresholds_only)" if passed
            else what_to_do}


def shortcut_check(validation: dict | None, metrics: dict, accept: str | None) -> dict | None:
    """A flagged shortcut blocks registration unless ``gate.accept_shortcut_risk`` gives a written reason."""
    evidence = []
    audit = (validation or {}).get("source_bias_audit") or {}
    if audit.get("flagged"):
        evidence.append(f"file metadata alone predicts the label (balanced accuracy {audit.get('balanced_accuracy')}"
                        f", chance {audit.get('chance_balanced_accuracy')})")
    stress = metrics.get("shortcut") or {}
    if stress.get("shortcut_risk"):
        evidence.append("stress tests: " + ("; ".join(_flag_text(f) for f in stress.get("flags") or []) or "flagged"))
    if not evidence:
        return None
    text = " and ".join(evidence)
    if accept:
        return {"check": f"shortcut risk accepted: {text}", "kind": "shortcut", "metric": "shortcut_risk",
                "value": True, "passed": True, "accepted": accept}
    return {"check": f"shortcut risk: {text}", "kind": "shortcut", "metric": "shortcut_risk", "value": True,
            "passed": False, "note": "such a model scores well on its own test split and fails on other hospitals. "
            "Fix the data (see the validation summary and the model card), or set gate.accept_shortcut_risk to a "
            "written reason (who accepts it, and why) to register anyway"}


def _flag_text(flag) -> str:
    """One stress-test flag of evaluate (``metrics["shortcut"]["flags"]``) in a few words."""
    if not isinstance(flag, dict):
        return str(flag)
    where = flag.get("set", "")
    cls = f", {flag['class']}" if flag.get("class") else ""
    value, limit = flag.get("value"), flag.get("threshold")
    numbers = f" {value:.2f} >= {limit:.2f}" if isinstance(value, float) and isinstance(limit, float) else ""
    return f"{flag.get('test', '?')} ({where}{cls}){numbers}"


def external_checks(metrics: dict, external_gates: dict) -> list[dict]:
    checks = []
    for name, g in external_gates.items():
        m = (metrics.get("external") or {}).get(name)
        if m is None:
            checks.append({"check": f"external {name}: evaluated", "kind": "external", "metric": "present",
                           "value": None, "passed": False, "note": "no results for this set: run `cxr external`"})
            continue
        ops = m.get("operating_points") or {}
        wanted = {"accuracy": (m.get("accuracy"), g.min_accuracy),
                  "macro_roc_auc": (m.get("macro_roc_auc"), g.min_macro_roc_auc),
                  **{f"sensitivity.{c}": ((ops.get(c) or {}).get("sensitivity"), v)
                     for c, v in g.min_sensitivity.items()}}
        for metric, (value, minimum) in wanted.items():
            checks.append({"check": f"external {name}: {metric} >= {minimum}", "kind": "external", "metric": metric,
                           "value": value, "threshold": minimum, "patients": None,
                           "passed": value is not None and value >= minimum})
    return checks


def training_check(train_summary: dict | None, y_test: np.ndarray, proba_test: np.ndarray) -> dict:
    """A failed training is not a candidate: training said ``training_failed`` (a constant predictor on the
    validation split), or the candidate predicts one class for every test image of several classes (splits of
    at least ``COLLAPSE_MIN_IMAGES`` images: on fewer, a weak model does that by chance)."""
    from components.core.stats.metrics import COLLAPSE_MIN_IMAGES

    summary = train_summary or {}
    reason = summary.get("failure") if summary.get("status") == "training_failed" else None
    predicted = np.unique(np.asarray(proba_test).argmax(axis=1)) if len(proba_test) else np.array([])
    if reason is None and len(predicted) == 1 and len(np.unique(y_test)) > 1 and len(y_test) >= COLLAPSE_MIN_IMAGES:
        reason = f"the candidate predicts class index {int(predicted[0])} for all {len(y_test)} test images"
    check = {"check": "training produced a classifier (not a constant predictor)", "kind": "training",
             "metric": "training_status", "value": summary.get("status", "unknown"), "passed": reason is None}
    if reason:
        check["note"] = f"{reason}. Retrain (see train_summary.json and the training curves); never register it"
    return check
