"""The gate's statistics: lineage, clean comparison ground, paired non-inferiority, the served decision.

* **Lineage.** Every model records the patients it trained and validated on, as SHA-256 digests of
  the patient ids (never the ids), with its data version and params hash (:func:`lineage`).
* **Clean ground.** Candidate and champion are compared only on test patients that neither of them
  trained or validated on; the patients left out are counted, with the reason. Fewer than
  ``gate.min_comparison_patients`` left, or a champion without lineage, makes the comparison
  *incomparable*, and ``gate.on_incomparable`` decides.
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

import hashlib
from collections.abc import Iterable

import numpy as np

from components.core.stats.clinical import conformal_threshold, patient_resamples

DIGEST_NAMESPACE = "cxr-mlops/patient/"


# ---------------------------------------------------------------- lineage
def patient_digest(patient_id: str) -> str:
    """A patient id's digest (128 bits of SHA-256): comparable across models, not the id itself."""
    return hashlib.sha256((DIGEST_NAMESPACE + str(patient_id)).encode()).hexdigest()[:32]


def digests(patient_ids: Iterable[str]) -> list[str]:
    return sorted({patient_digest(p) for p in patient_ids})


def set_digest(items: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


def image_digest(sha256: str) -> str:
    """An image's content digest in lineage: the first 128 bits of its sha256 (the file's bytes)."""
    return str(sha256)[:32]


def lineage(train_ids: Iterable[str], val_ids: Iterable[str], *, data_version: str, manifest_digest: str,
            params_hash: str, git_commit: str, train_images: Iterable[str] = (),
            val_images: Iterable[str] = ()) -> dict:
    """What a model version must carry so a later gate can tell which patients, and which images (by content:
    a renamed or re-ingested file keeps its sha256), it has seen."""
    train, val = digests(train_ids), digests(val_ids)
    images = {"train": sorted({image_digest(h) for h in train_images if h}),
              "val": sorted({image_digest(h) for h in val_images if h})}
    return {"schema": 2, "digest": "sha256:" + DIGEST_NAMESPACE + "<patient_id>, first 128 bits",
            "image_digest": "sha256 of the image file, first 128 bits",
            "patients": {"train": train, "val": val}, "images": images,
            "counts": {"train": len(train), "val": len(val), "train_images": len(images["train"]),
                       "val_images": len(images["val"])},
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


def seen_images(record: dict | None) -> set[str] | None:
    """The image content digests a model trained or validated on; None when the record has none (lineage
    schema 1: patients only)."""
    if not record or "images" not in record:
        return None
    return set(record["images"].get("train", [])) | set(record["images"].get("val", []))


# ---------------------------------------------------------------- operating points
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


def comparison_ground(test_patients: np.ndarray, cand_seen: set[str] | None, champ_seen: set[str] | None,
                      minimum: int, test_images: np.ndarray | None = None, cand_images: set[str] | None = None,
                      champ_images: set[str] | None = None) -> dict:
    """Which test patients may compare the two models, and why the others may not: a patient either model
    trained or validated on (by patient id), or one with an image either model saw (by content, whatever its
    name or patient id: a file without an id is its own patient, so a renamed copy would otherwise slip in)."""
    test_patients = np.asarray(test_patients).astype(str)
    uniq = sorted(set(test_patients))
    dig = {p: patient_digest(p) for p in uniq}
    content: dict[str, set[str]] = {p: set() for p in uniq}
    if test_images is not None:
        for p, h in zip(test_patients, np.asarray(test_images).astype(str), strict=True):
            if h and h != "nan":
                content[p].add(image_digest(h))
    excluded = {"champion_trained_or_validated": 0, "candidate_trained_or_validated": 0,
                "champion_saw_an_image": 0, "candidate_saw_an_image": 0}
    keep = []
    for p in uniq:
        if champ_seen is not None and dig[p] in champ_seen:
            excluded["champion_trained_or_validated"] += 1
        elif cand_seen is not None and dig[p] in cand_seen:
            excluded["candidate_trained_or_validated"] += 1
        elif champ_images and content[p] & champ_images:
            excluded["champion_saw_an_image"] += 1
        elif cand_images and content[p] & cand_images:
            excluded["candidate_saw_an_image"] += 1
        else:
            keep.append(p)
    out = {"patients_total": len(uniq), "patients_used": len(keep), "excluded": excluded, "keep": keep,
           "min_comparison_patients": minimum,
           "by_content": test_images is not None and bool(champ_images)}
    if champ_seen is None:
        out.update(status="incomparable", reason="the champion has no lineage record (registered before lineage "
                   "was recorded), so the patients it trained on are unknown")
    elif len(keep) < minimum:
        seen = excluded["champion_trained_or_validated"] + excluded["champion_saw_an_image"]
        out.update(status="incomparable", reason=f"only {len(keep)} test patients are new to both models "
                   f"(gate.min_comparison_patients is {minimum}; {seen} were in the champion's training or "
                   "validation data)")
    else:
        out.update(status="compared", reason="")
    if champ_seen is not None and champ_images is None:
        out["note"] = ("the champion's lineage has patient digests only (schema 1): test images it saw under another "
                       "patient id cannot be excluded")
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
