"""The gate's numbers: intervals of the served decision, the paired comparison with the champion, its power.

* **One model** (:func:`served_intervals`): accuracy, macro F1, macro ROC-AUC, and per class with an operating
  point the sensitivity and specificity of the thresholded decision ``proba[:, c] >= threshold`` (what
  ``cxr serve`` returns), each with an interval that does not collapse at 0 or 1 and the patients it rests on
  (:mod:`components.core.stats.intervals`).
* **Paired, candidate - champion** (:func:`paired_comparison`) on the same patients: accuracy by Tango's score
  interval; per class, ROC-AUC (MOVER with the DeLong correlation) and the decision at **matched operating
  points**: specificity at the sensitivity both models reach at their served thresholds, and sensitivity at
  the specificity both reach. Each model's threshold is moved on the comparison patients to the matched point,
  so the comparison is about the models' scores, not about where each validation split happened to put its
  threshold; the served thresholds themselves are checked by the absolute thresholds. Macro F1 and macro
  ROC-AUC by MOVER (the correlation of the two models' values over patient resamples).
* **Power** (:func:`non_inferiority_checks`): before reading a check, the probability that it could pass if
  the two models were equally good (for a paired proportion: exactly, from the comparison patients, the margin
  and the observed discordance; otherwise from the spread of its interval), and the patients that would give
  ``gate.min_power``. A check whose interval does not clear ``-margin`` is *failed* when it was powered or the
  candidate is shown worse (upper bound below ``-margin``), else *inconclusive*: the data cannot tell.
"""

from __future__ import annotations

import math

import numpy as np

from components.core.stats import intervals
from components.core.stats.clinical import auc, macro_f1_posterior, patient_resamples, threshold_for_sensitivity

GATED_BASE = ("accuracy", "macro_f1", "macro_roc_auc")


def _r(x, nd: int = 4):
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def _n_eff(patients: np.ndarray) -> float:
    return intervals.kish_n(intervals.cluster_sizes(patients))


# ---------------------------------------------------------------- one model
def _macro_auc(y: np.ndarray, proba: np.ndarray, patients: np.ndarray, k: int, level: float):
    """(macro AUC, its interval as the mean of the class score intervals) over the classes present."""
    rows = []
    for i in range(k):
        pos = y == i
        a = auc(pos, proba[:, i])
        if np.isfinite(a):
            rows.append((a, *intervals.auc_interval(a, _n_eff(patients[pos]), _n_eff(patients[~pos]), level)))
    if not rows:
        return float("nan"), None
    m = np.array(rows).mean(axis=0)
    return float(m[0]), (float(m[1]), float(m[2]))


def _macro_auc_point(y: np.ndarray, proba: np.ndarray, k: int) -> float:
    areas = [a for a in (auc(y == i, proba[:, i]) for i in range(k)) if np.isfinite(a)]
    return float(np.mean(areas)) if areas else float("nan")


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    f1s = [2 * np.sum((y == c) & (pred == c)) / (np.sum(y == c) + np.sum(pred == c)) for c in np.unique(y)]
    return float(np.mean(f1s)) if f1s else float("nan")


def served_intervals(y: np.ndarray, proba: np.ndarray, patients: np.ndarray, classes: list[str],
                     thresholds: dict[str, float], level: float) -> dict[str, dict]:
    """Point, interval and patients of every served metric of one model (``{metric: {point, ci, patients}}``;
    sensitivity counts the class's positive patients, specificity its negative ones)."""
    y, proba, patients = np.asarray(y), np.asarray(proba, dtype=float), np.asarray(patients).astype(str)
    pred = proba.argmax(axis=1)
    n_patients = len(set(patients))
    acc = intervals.proportion(pred == y, patients, level)
    out: dict[str, dict] = {"accuracy": {"point": acc["point"] if acc else None,
                                         "ci": (acc["low"], acc["high"]) if acc else None, "patients": n_patients}}
    f1_ci = macro_f1_posterior(y, pred, patients, len(classes), level) if len(y) else None
    out["macro_f1"] = {"point": _r(_macro_f1(y, pred)), "ci": tuple(_r(v) for v in f1_ci) if f1_ci else None,
                       "patients": n_patients}
    m_auc, m_ci = _macro_auc(y, proba, patients, len(classes), level)
    out["macro_roc_auc"] = {"point": _r(m_auc), "ci": tuple(_r(v) for v in m_ci) if m_ci else None,
                            "patients": n_patients}
    for c, t in thresholds.items():
        if c not in classes:
            continue
        i = classes.index(c)
        pos, flag = y == i, proba[:, i] >= t
        sens = intervals.proportion(flag[pos], patients[pos], level)
        spec = intervals.proportion(~flag[~pos], patients[~pos], level)
        out[f"sensitivity.{c}"] = {"point": sens["point"] if sens else None,
                                   "ci": (sens["low"], sens["high"]) if sens else None,
                                   "patients": len(set(patients[pos])), "count": "positive patients"}
        out[f"specificity.{c}"] = {"point": spec["point"] if spec else None,
                                   "ci": (spec["low"], spec["high"]) if spec else None,
                                   "patients": len(set(patients[~pos])), "count": "negative patients"}
    return out


# ---------------------------------------------------------------- paired
def threshold_for_specificity(scores: np.ndarray, negative: np.ndarray, target: float) -> float:
    """The lowest threshold t with specificity (negatives scoring below t) >= target."""
    neg = np.sort(scores[negative])
    k = math.ceil(target * len(neg) - 1e-9)
    if k <= 0:
        return float(np.min(scores)) if len(scores) else 0.0
    return float(np.nextafter(neg[k - 1], np.inf))


def _paired_entry(stats: dict | None, what: str, **extra) -> dict:
    if stats is None:
        return {"candidate": None, "champion": None, "difference": None, "ci": None, "kind": "proportion",
                "note": f"no {what} among the comparison patients", **extra}
    return {"candidate": stats["first"], "champion": stats["second"], "difference": stats["difference"],
            "ci": stats["ci"], "kind": "proportion", "b": stats["b"], "c": stats["c"], "n": stats["n"],
            "patients": stats["patients"], "discordant_images": stats["discordant_images"],
            "method": stats["method"], **extra}


def _mover_entry(a: float, a_ci, b: float, b_ci, r: float, n: float, patients: int, method: str) -> dict:
    if a_ci is None or b_ci is None or not (np.isfinite(a) and np.isfinite(b)):
        return {"candidate": _r(a), "champion": _r(b), "difference": None, "ci": None, "kind": "mover",
                "patients": patients, "note": "undefined on the comparison patients (a class is missing)"}
    lo, hi = intervals.mover(a, a_ci, b, b_ci, r)
    return {"candidate": _r(a), "champion": _r(b), "difference": _r(a - b), "ci": (_r(lo), _r(hi)),
            "kind": "mover", "correlation": _r(r, 3), "n": n, "patients": patients, "method": method}


def _bootstrap_correlation(values) -> float:
    arr = np.asarray(values, dtype=float).reshape(-1, 2)
    arr = arr[np.isfinite(arr).all(axis=1)]
    if len(arr) < 10 or arr[:, 0].std() == 0 or arr[:, 1].std() == 0:
        return 0.0
    return float(np.clip(np.corrcoef(arr[:, 0], arr[:, 1])[0, 1], -1, 1))


def paired_comparison(y: np.ndarray, cand: np.ndarray, champ: np.ndarray, patients: np.ndarray,
                      classes: list[str], cand_thresholds: dict[str, float], champ_thresholds: dict[str, float],
                      level: float, resamples: int = 0, seed: int = 0) -> dict[str, dict]:
    """candidate, champion, their difference and its interval for every gated metric, on the same patients."""
    y, patients = np.asarray(y), np.asarray(patients).astype(str)
    cand, champ = np.asarray(cand, dtype=float), np.asarray(champ, dtype=float)
    k = len(classes)
    pa, pb = cand.argmax(axis=1), champ.argmax(axis=1)
    n_all, n_patients = _n_eff(patients), len(set(patients))
    out = {"accuracy": _paired_entry(intervals.paired_difference(pa == y, pb == y, patients, level), "patients")}
    # macro F1 and macro AUC: MOVER, the correlation from patient resamples (0, the conservative value, without)
    pairs_f1, pairs_auc = [], []
    for idx in patient_resamples(patients, resamples, seed):
        pairs_f1.append((_macro_f1(y[idx], pa[idx]), _macro_f1(y[idx], pb[idx])))
        pairs_auc.append((_macro_auc_point(y[idx], cand[idx], k), _macro_auc_point(y[idx], champ[idx], k)))
    f1a, f1b = macro_f1_posterior(y, pa, patients, k, level), macro_f1_posterior(y, pb, patients, k, level)
    out["macro_f1"] = _mover_entry(_macro_f1(y, pa), f1a, _macro_f1(y, pb), f1b, _bootstrap_correlation(pairs_f1),
                                   n_all, n_patients, "MOVER of the Dirichlet-posterior intervals")
    (ma, ma_ci), (mb, mb_ci) = _macro_auc(y, cand, patients, k, level), _macro_auc(y, champ, patients, k, level)
    out["macro_roc_auc"] = _mover_entry(ma, ma_ci, mb, mb_ci, _bootstrap_correlation(pairs_auc), n_all, n_patients,
                                        "MOVER of the mean Newcombe score intervals")
    for c in [c for c in classes if c in cand_thresholds or c in champ_thresholds]:
        i = classes.index(c)
        pos = y == i
        sa, sb = cand[:, i], champ[:, i]
        m, n = _n_eff(patients[pos]), _n_eff(patients[~pos])
        a1, a2 = auc(pos, sa), auc(pos, sb)
        if np.isfinite(a1) and np.isfinite(a2):
            out[f"roc_auc.{c}"] = _mover_entry(a1, intervals.auc_interval(a1, m, n, level), a2,
                                               intervals.auc_interval(a2, m, n, level),
                                               intervals.delong_correlation(pos, sa, sb), min(m, n), n_patients,
                                               "MOVER of Newcombe score intervals, DeLong correlation")
            out[f"roc_auc.{c}"]["positives"] = len(set(patients[pos]))
        if not pos.any() or pos.all():
            what = "positive" if not pos.any() else "negative"
            out[f"specificity.{c}"] = _paired_entry(None, f"{what} patients of {c}")
            out[f"sensitivity.{c}"] = _paired_entry(None, f"{what} patients of {c}")
            continue
        served = [(s, t) for s, t in ((sa, cand_thresholds.get(c)), (sb, champ_thresholds.get(c))) if t is not None]
        # specificity at the sensitivity both models reach at their served thresholds
        s_star = min(float(np.mean(s[pos] >= t)) for s, t in served)
        ta, tb = threshold_for_sensitivity(sa, pos, s_star), threshold_for_sensitivity(sb, pos, s_star)
        out[f"specificity.{c}"] = _paired_entry(
            intervals.paired_difference(sa[~pos] < ta, sb[~pos] < tb, patients[~pos], level), f"negatives of {c}",
            matched={"sensitivity": _r(s_star), "candidate_threshold": ta, "champion_threshold": tb},
            count="negative patients")
        # sensitivity at the specificity both reach
        sp_star = min(float(np.mean(s[~pos] < t)) for s, t in served)
        ta, tb = threshold_for_specificity(sa, ~pos, sp_star), threshold_for_specificity(sb, ~pos, sp_star)
        out[f"sensitivity.{c}"] = _paired_entry(
            intervals.paired_difference(sa[pos] >= ta, sb[pos] >= tb, patients[pos], level), f"positives of {c}",
            matched={"specificity": _r(sp_star), "candidate_threshold": ta, "champion_threshold": tb},
            count="positive patients")
    return out


# ---------------------------------------------------------------- power and checks
def check_power(d: dict, margin: float, level: float, want: float, need: bool = True) -> dict:
    """Power of one non-inferiority check now, and (``need``) the patients of the kind it counts for ``want``
    power, assuming the two models are equally good."""
    from scipy.stats import norm

    n = float(d.get("n") or 0)
    patients = int(d.get("patients") or 0)
    if d.get("ci") is None or n <= 0:
        return {"power": 0.0, "patients_needed": None}
    scale = patients / n if n else 1.0  # effective -> real patients
    if d["kind"] == "proportion":
        psi = intervals.planning_discordance(d["b"], d["c"], n)

        def power_at(m: float) -> float:
            return intervals.tango_power(m, psi, margin, level)

        planning = {"discordance": round(psi, 4)}
    else:
        se = max((d["difference"] - d["ci"][0]) / intervals.z_value(level), 1e-6)

        def power_at(m: float) -> float:
            return intervals.normal_power(m, n, se, margin, level)

        planning = {"standard_error": round(se, 4)}
    power = power_at(n)
    if power >= want or not need:
        wanted = None
    elif d["kind"] == "proportion":
        wanted = intervals.patients_for_power(power_at, n, want)
    else:
        wanted = math.ceil(n * (se * (intervals.z_value(level) + float(norm.ppf(want))) / margin) ** 2)
    return {"power": round(power, 3), "planning": planning,
            "patients_needed": math.ceil(wanted * scale) if wanted is not None else None}


def non_inferiority_checks(paired: dict[str, dict], gate, patients: int, level: float = 0.95) -> list[dict]:
    """The candidate may be worse than the champion by less than the margin, with confidence; each check with
    its power, and *inconclusive* instead of failed when it had too little power to tell."""
    checks = []
    for metric, d in paired.items():
        if metric not in GATED_BASE and not metric.startswith(("sensitivity.", "specificity.", "roc_auc.")):
            continue
        margin = gate.margin(metric)
        ci = d["ci"]
        lower, upper = (ci[0], ci[1]) if ci else (None, None)
        settled = lower is not None and (lower > -margin or upper < -margin)  # passed, or shown worse
        power = check_power(d, margin, level, gate.min_power, need=not settled)
        counted = d.get("patients", patients)
        label = {"specificity": " at matched sensitivity", "sensitivity": " at matched specificity"}.get(
            metric.split(".", 1)[0], "") if "." in metric else ""
        check = {
            "check": f"{metric}{label}: candidate - champion, lower CI bound > -{margin}", "kind": "non_inferiority",
            "metric": metric, "value": d["difference"], "ci": list(ci) if ci else None, "margin": margin,
            "candidate": d["candidate"], "champion": d["champion"], "patients": counted,
            "count": d.get("count", "patients"), "method": d.get("method"), **power,
            "superior": lower is not None and lower > 0}
        if d.get("matched"):
            check["matched"] = d["matched"]
        if lower is not None and lower > -margin:
            status = "passed"
        elif upper is not None and upper < -margin:
            status = "failed"  # shown worse, whatever the power
        elif power["power"] >= gate.min_power:
            status = "failed"
        else:
            status = "inconclusive"
        check["status"] = status
        if status == "inconclusive":
            need = power["patients_needed"]
            check["note"] = (f"inconclusive: {counted} {check['count']} give this check {power['power']:.0%} power "
                             f"at margin {margin}; " + (f"≈{need} would give {gate.min_power:.0%}"
                                                       if need else "its interval is undefined here")
                             + ("" if gate.on_underpowered == "fail" else
                                " (not blocking: gate.on_underpowered is thresholds_only)"))
        elif status == "failed" and ci is None:
            check["note"] = "no interval: no comparison patients of this kind"
        check["passed"] = status == "passed" or (status == "inconclusive" and gate.on_underpowered == "thresholds_only")
        checks.append(check)
    return checks


def needs_patients(checks: list[dict], patients: int) -> tuple[int | None, dict | None]:
    """The comparison patients (at this class mix) that would give every inconclusive check its power, and the
    check that needs the most (a per-class need counts positives or negatives: it is scaled to all patients)."""
    best: tuple[int | None, dict | None] = (None, None)
    for c in checks:
        if c.get("status") == "inconclusive" and c.get("patients_needed"):
            total = math.ceil(c["patients_needed"] * patients / max(c["patients"], 1))
            if best[0] is None or total > best[0]:
                best = (total, c)
    return best


def inconclusive_summary(checks: list[dict], patients: int, on_underpowered: str, want: float) -> str | None:
    """One sentence: what an inconclusive comparison would take."""
    open_ = [c for c in checks if c.get("status") == "inconclusive"]
    if not open_:
        return None
    total, worst = needs_patients(checks, patients)
    head = (f"Inconclusive: {patients} test patients new to both models cannot show that the candidate is no worse "
            f"than the champion on {', '.join(c['metric'] for c in open_)}")
    tail = (f"; needs ≈{total} such patients for {want:.0%} power on every check ({worst['metric']} needs the most: "
            f"≈{worst['patients_needed']} {worst['count']})" if worst else
            "; some checks have no interval on these patients")
    what = (" — decided on the absolute thresholds (gate.on_underpowered: thresholds_only)."
            if on_underpowered == "thresholds_only" else
            " — the gate fails until then, or set gate.on_underpowered: thresholds_only.")
    return head + tail + what
