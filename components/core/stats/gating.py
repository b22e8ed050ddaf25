"""The gate's statistics: lineage, clean comparison ground, paired non-inferiority, the served decision.

* **Lineage.** Every model records the patients it trained and validated on, as SHA-256 digests of
  the patient ids (never the ids), with its data version and params hash (:func:`lineage`).
* **Clean ground.** Candidate and champion are compared only on test patients that neither of them
  trained or validated on; the patients left out are counted, with the reason. Fewer than
  ``gate.min_comparison_patients`` left, or a champion without lineage, makes the comparison
  *incomparable*, and ``gate.on_incomparable`` decides.
* **Paired non-inferiority.** For each gated metric, patients are resampled with replacement
  (all of a patient's images move together) and the metric of *both* models is computed on the same
  resample; the check passes when the lower bound of the CI of (candidate - champion) is above
  ``-margin``, and the candidate is marked *superior* when that bound is above 0. Point estimates of
  two models on a reshuffled split, or a flat regression allowance, can pass a worse model.
* **The served decision.** Sensitivity and specificity are those of the thresholded decision at each
  model's own operating points (chosen on its validation split), i.e. what ``cxr serve`` returns,
  not argmax recall.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from components.core.stats.clinical import auc, patient_resamples, threshold_for_sensitivity

DIGEST_NAMESPACE = "cxr-mlops/patient/"


# ---------------------------------------------------------------- lineage
def patient_digest(patient_id: str) -> str:
    """A patient id's digest (128 bits of SHA-256): comparable across models, not the id itself."""
    return hashlib.sha256((DIGEST_NAMESPACE + str(patient_id)).encode()).hexdigest()[:32]


def digests(patient_ids: Iterable[str]) -> list[str]:
    return sorted({patient_digest(p) for p in patient_ids})


def set_digest(items: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


def lineage(train_ids: Iterable[str], val_ids: Iterable[str], *, data_version: str, manifest_digest: str,
            params_hash: str, git_commit: str) -> dict:
    """What a model version must carry so a later gate can tell which patients it has seen."""
    train, val = digests(train_ids), digests(val_ids)
    return {"schema": 1, "digest": "sha256:" + DIGEST_NAMESPACE + "<patient_id>, first 128 bits",
            "patients": {"train": train, "val": val},
            "counts": {"train": len(train), "val": len(val)},
            "seen_digest": set_digest(train + val), "data_version": data_version,
            "manifest_digest": manifest_digest, "params_hash": params_hash, "git_commit": git_commit}


def manifest_digest(frames) -> str:
    """A digest of which images, labels and patients a split holds (formatting and order do not matter)."""
    rows = []
    for name, df in frames.items():
        sha = df["sha256"] if "sha256" in df.columns else df["path"]
        rows += [f"{name}\x1f{p}\x1f{lbl}\x1f{s}\x1f{patient_digest(pid)}"
                 for p, lbl, s, pid in zip(df["path"], df["label"], sha, df["patient_id"], strict=True)]
    return set_digest(rows)


def digested_rows(df):
    """Manifest rows safe to log (MLflow datasets): the patient id replaced by its digest."""
    keep = [c for c in ("path", "label", "source", "sha256", "width", "height", "format") if c in df.columns]
    out = df[keep].copy()
    out["patient"] = [patient_digest(p) for p in df["patient_id"]]
    return out


def seen_patients(record: dict | None) -> set[str] | None:
    """The digests a model trained or validated on; None when the record is missing."""
    if not record or "patients" not in record:
        return None
    return set(record["patients"].get("train", [])) | set(record["patients"].get("val", []))


# ---------------------------------------------------------------- metrics of the served decision
def served_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str], thresholds: dict[str, float]) -> dict:
    """accuracy, macro F1, macro ROC-AUC (as evaluate reports them), and per class with an operating point
    the sensitivity and specificity of the thresholded decision ``proba[:, c] >= threshold``."""
    y, proba = np.asarray(y), np.asarray(proba, dtype=float)
    pred = proba.argmax(axis=1)
    out: dict[str, float] = {"accuracy": float((pred == y).mean()) if len(y) else np.nan}
    f1s, aucs = [], []
    for i in range(len(classes)):
        pos, hit = y == i, pred == i
        tp, fp, fn = (pos & hit).sum(), (~pos & hit).sum(), (pos & ~hit).sum()
        if pos.any():
            prec, rec = (tp / (tp + fp) if tp + fp else 0.0), tp / (tp + fn)
            f1s.append(2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0)
        aucs.append(auc(pos, proba[:, i]))
    out["macro_f1"] = float(np.mean(f1s)) if f1s else np.nan
    finite = [a for a in aucs if np.isfinite(a)]
    out["macro_roc_auc"] = float(np.mean(finite)) if finite else np.nan
    for c, t in thresholds.items():
        if c not in classes:
            continue
        i = classes.index(c)
        pos, flag = y == i, proba[:, i] >= t
        out[f"sensitivity.{c}"] = float((flag & pos).sum() / pos.sum()) if pos.any() else np.nan
        out[f"specificity.{c}"] = float((~flag & ~pos).sum() / (~pos).sum()) if (~pos).any() else np.nan
    return out


def _ci(values: list[float], level: float) -> tuple[float, float] | None:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) < 10:
        return None
    lo, hi = np.percentile(arr, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return round(float(lo), 4), round(float(hi), 4)


def bootstrap(y: np.ndarray, proba: np.ndarray, patients: np.ndarray, classes: list[str],
              thresholds: dict[str, float], resamples: int, seed: int, level: float) -> dict[str, dict]:
    """Point and patient-level CI of every served metric of one model."""
    point = served_metrics(y, proba, classes, thresholds)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for idx in patient_resamples(patients, resamples, seed):
        for k, v in served_metrics(y[idx], proba[idx], classes, thresholds).items():
            samples[k].append(v)
    return {k: {"point": _round(v), "ci": _ci(samples[k], level)} for k, v in point.items()}


def paired_bootstrap(y: np.ndarray, cand: np.ndarray, champ: np.ndarray, patients: np.ndarray,
                     classes: list[str], cand_thresholds: dict[str, float], champ_thresholds: dict[str, float],
                     resamples: int, seed: int, level: float) -> dict[str, dict]:
    """For each metric both models have: candidate, champion, their difference and its paired CI."""
    pc = served_metrics(y, cand, classes, cand_thresholds)
    ph = served_metrics(y, champ, classes, champ_thresholds)
    keys = [k for k in pc if k in ph]
    diffs: dict[str, list[float]] = {k: [] for k in keys}
    for idx in patient_resamples(patients, resamples, seed):
        a = served_metrics(y[idx], cand[idx], classes, cand_thresholds)
        b = served_metrics(y[idx], champ[idx], classes, champ_thresholds)
        for k in keys:
            diffs[k].append(a[k] - b[k])
    return {k: {"candidate": _round(pc[k]), "champion": _round(ph[k]), "difference": _round(pc[k] - ph[k]),
                "ci": _ci(diffs[k], level)} for k in keys}


def threshold_cis(y_val: np.ndarray, proba_val: np.ndarray, patients: np.ndarray, classes: list[str],
                  targets: dict[str, float], resamples: int, seed: int, level: float) -> dict[str, dict]:
    """How much each operating point's threshold itself moves when the validation patients are resampled."""
    out = {}
    for c, target in targets.items():
        i = classes.index(c)
        t = threshold_for_sensitivity(proba_val[:, i], y_val == i, target)
        if t is None:
            continue
        values = [threshold_for_sensitivity(proba_val[idx, i], y_val[idx] == i, target)
                  for idx in patient_resamples(patients, resamples, seed)]
        out[c] = {"threshold": round(t, 6), "target_sensitivity": target,
                  "ci": _ci([v for v in values if v is not None], level)}
    return out


def _round(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


# ---------------------------------------------------------------- checks
GATED_BASE = ("accuracy", "macro_f1", "macro_roc_auc")


def threshold_checks(cand_stats: dict[str, dict], gate, patients: int) -> list[dict]:
    """``gate.min_*`` on the candidate's served metrics (lower CI bounds with ``gate.use_lower_ci``)."""
    wanted = {"accuracy": gate.min_accuracy, "macro_f1": gate.min_macro_f1, "macro_roc_auc": gate.min_roc_auc,
              **{f"sensitivity.{c}": v for c, v in gate.min_sensitivity.items()},
              **{f"specificity.{c}": v for c, v in gate.min_specificity.items()}}
    checks = []
    for metric, minimum in wanted.items():
        stat = cand_stats.get(metric) or {}
        point, ci = stat.get("point"), stat.get("ci")
        value = (ci[0] if ci else None) if gate.use_lower_ci else point
        label = f"{metric} {'lower CI bound ' if gate.use_lower_ci else ''}>= {minimum}"
        checks.append({"check": label, "kind": "threshold", "metric": metric, "value": value, "point": point,
                       "ci": list(ci) if ci else None, "threshold": minimum, "patients": patients,
                       "passed": value is not None and value >= minimum})
    return checks


def non_inferiority_checks(paired: dict[str, dict], gate, patients: int) -> list[dict]:
    """The candidate may be worse than the champion by less than the margin, with confidence."""
    checks = []
    for metric, d in paired.items():
        if metric not in GATED_BASE and not metric.startswith(("sensitivity.", "specificity.")):
            continue
        margin = gate.margin(metric)
        ci = d["ci"]
        lower = ci[0] if ci else None
        check = {
            "check": f"{metric}: candidate - champion, lower CI bound > -{margin}", "kind": "non_inferiority",
            "metric": metric, "value": d["difference"], "ci": list(ci) if ci else None, "margin": margin,
            "candidate": d["candidate"], "champion": d["champion"], "patients": patients,
            "passed": lower is not None and lower > -margin, "superior": lower is not None and lower > 0}
        if ci is None:  # cannot show non-inferiority: fail, and say why
            check["note"] = ("no CI: too few comparison patients with (and without) this finding, or "
                             "evaluate.bootstrap.resamples is 0; add patients new to both models")
        checks.append(check)
    return checks


def comparison_ground(test_patients: np.ndarray, cand_seen: set[str] | None, champ_seen: set[str] | None,
                      minimum: int) -> dict:
    """Which test patients may compare the two models, and why the others may not."""
    uniq = sorted(set(map(str, test_patients)))
    dig = {p: patient_digest(p) for p in uniq}
    excluded = {"champion_trained_or_validated": 0, "candidate_trained_or_validated": 0}
    keep = []
    for p in uniq:
        if champ_seen is not None and dig[p] in champ_seen:
            excluded["champion_trained_or_validated"] += 1
        elif cand_seen is not None and dig[p] in cand_seen:
            excluded["candidate_trained_or_validated"] += 1
        else:
            keep.append(p)
    out = {"patients_total": len(uniq), "patients_used": len(keep), "excluded": excluded, "keep": keep,
           "min_comparison_patients": minimum}
    if champ_seen is None:
        out.update(status="incomparable", reason="the champion has no lineage record (registered before lineage "
                   "was recorded), so the patients it trained on are unknown")
    elif len(keep) < minimum:
        out.update(status="incomparable", reason=f"only {len(keep)} test patients are new to both models "
                   f"(gate.min_comparison_patients is {minimum}; {excluded['champion_trained_or_validated']} "
                   "were in the champion's training or validation data)")
    else:
        out.update(status="compared", reason="")
    return out


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
    from components.core.model.training import COLLAPSE_MIN_IMAGES  # numpy only: no TensorFlow import

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
