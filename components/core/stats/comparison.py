"""The gate's numbers: intervals of the served decision, the paired comparison with the champion, its power.

* **One model** (:func:`served_intervals`): accuracy, macro F1, macro ROC-AUC, and per class with an operating
  point the sensitivity and specificity of the thresholded decision ``proba[:, c] >= threshold`` (what
  ``cxr serve`` returns), each with an interval that does not collapse at 0 or 1 and the patients it rests on
  (:mod:`components.core.stats.intervals`). The absolute thresholds read these.
* **Paired, candidate - champion** (:func:`paired_comparison`) on the same patients: accuracy by Tango's score
  interval; macro F1 and macro ROC-AUC by MOVER (the correlation of the two models' values over patient
  resamples, from the patients' DeLong influences); per class with an operating point, ROC-AUC by MOVER with the
  DeLong correlation; each correlation at its lower 95% bound (Fisher's z on the patients: a few patients cannot
  make the interval of a difference narrow). No comparison at
  thresholds moved on the comparison patients: an interval that treats such a threshold as fixed leaves out its
  noise (coverage 0.77-0.89 for two equal models, issue 28), so the decision each model serves is gated by the
  absolute thresholds and the ranking by the paired ROC-AUC.
* **Verdict** (:func:`non_inferiority_checks`): a check *passes* when the lower bound of (candidate - champion)
  is above ``-margin``; it *fails* when the whole interval is below 0 (the candidate is shown worse), whatever
  the power; otherwise the data are consistent with both "no worse" and "worse by the margin", and the check
  *fails* when the comparison was powered (for two equal models, all its checks together pass with at least
  ``gate.min_power``: :func:`joint_power`) and is *inconclusive* when it was not. The power is planned without
  the candidate's excess errors (:func:`components.core.stats.intervals.planning_discordance`, or
  ``gate.planning_discordance``), so more extra errors never give a milder status.
"""

from __future__ import annotations

import math

import numpy as np

from components.core.stats import intervals, resampling
from components.core.stats.clinical import auc, macro_f1_posterior

GATED_BASE = ("accuracy", "macro_f1", "macro_roc_auc")
SEVERITY = {"passed": 0, "inconclusive": 1, "failed": 2}


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
def _mover_entry(a: float, a_ci, b: float, b_ci, r: float, n: float, patients: int, method: str) -> dict:
    """A MOVER difference; the correlation it reads is the lower 95% bound of the estimated one
    (:func:`components.core.stats.intervals.correlation_lower_bound` on the effective patients ``n``)."""
    if a_ci is None or b_ci is None or not (np.isfinite(a) and np.isfinite(b)):
        return {"candidate": _r(a), "champion": _r(b), "difference": None, "ci": None, "kind": "mover",
                "patients": patients, "note": "undefined on the comparison patients (a class is missing)"}
    used = intervals.correlation_lower_bound(r, n)
    lo, hi = intervals.mover(a, a_ci, b, b_ci, used)
    return {"candidate": _r(a), "champion": _r(b), "difference": _r(a - b), "ci": (_r(lo), _r(hi)),
            "kind": "mover", "correlation": _r(used, 3), "correlation_estimated": _r(r, 3),
            "champion_ci": (_r(b_ci[0]), _r(b_ci[1])), "n": n, "patients": patients, "method": method}


def paired_comparison(y: np.ndarray, cand: np.ndarray, champ: np.ndarray, patients: np.ndarray,
                      classes: list[str], compared: list[str], level: float, resamples: int = 0,
                      seed: int = 0) -> dict[str, dict]:
    """candidate, champion, their difference and its interval for every compared metric, on the same patients:
    accuracy, macro F1, macro ROC-AUC and the ROC-AUC of each class in ``compared`` (the classes with an
    operating point)."""
    y, patients = np.asarray(y), np.asarray(patients).astype(str)
    cand, champ = np.asarray(cand, dtype=float), np.asarray(champ, dtype=float)
    k = len(classes)
    pa, pb = cand.argmax(axis=1), champ.argmax(axis=1)
    n_all, n_patients = _n_eff(patients), len(set(patients))
    acc = intervals.paired_difference(pa == y, pb == y, patients, level)
    out: dict[str, dict] = {"accuracy": (
        {"candidate": acc["first"], "champion": acc["second"], "difference": acc["difference"], "ci": acc["ci"],
         "kind": "proportion", "b": acc["b"], "c": acc["c"], "n": acc["n"], "patients": acc["patients"],
         "design_effect": acc["design_effect"], "discordant_images": acc["discordant_images"],
         "method": acc["method"]} if acc else
        {"candidate": None, "champion": None, "difference": None, "ci": None, "kind": "proportion",
         "note": "no comparison patients"})}
    # macro F1: MOVER, the correlation over patient resamples (0, the conservative value, without them)
    f1_pairs: list[np.ndarray] = [np.zeros(0), np.zeros(0)]
    cells = None
    for counts, inverse in resampling.patient_draws(patients, resamples, seed):
        if cells is None:
            cells = [resampling.patient_confusion(inverse, y, p, k) for p in (pa, pb)]
        f1_pairs = [np.r_[f1_pairs[0], resampling.macro_f1(counts, cells[0], k)],
                    np.r_[f1_pairs[1], resampling.macro_f1(counts, cells[1], k)]]
    f1a, f1b = macro_f1_posterior(y, pa, patients, k, level), macro_f1_posterior(y, pb, patients, k, level)
    out["macro_f1"] = _mover_entry(_macro_f1(y, pa), f1a, _macro_f1(y, pb), f1b, resampling.correlation(*f1_pairs),
                                   n_all, n_patients, "MOVER of the Dirichlet-posterior intervals")
    # macro AUC: MOVER, the correlation from the patients' DeLong influences
    (ma, ma_ci), (mb, mb_ci) = _macro_auc(y, cand, patients, k, level), _macro_auc(y, champ, patients, k, level)
    r_auc = intervals.influence_correlation(intervals.macro_auc_influence(y, cand, patients, k),
                                            intervals.macro_auc_influence(y, champ, patients, k))
    out["macro_roc_auc"] = _mover_entry(ma, ma_ci, mb, mb_ci, r_auc, n_all, n_patients,
                                        "MOVER of the mean Newcombe score intervals, DeLong correlation by patient")
    for c in [c for c in classes if c in compared]:
        i = classes.index(c)
        pos = y == i
        sa, sb = cand[:, i], champ[:, i]
        m, n = _n_eff(patients[pos]), _n_eff(patients[~pos])
        a1, a2 = auc(pos, sa), auc(pos, sb)
        if not (np.isfinite(a1) and np.isfinite(a2)):
            out[f"roc_auc.{c}"] = _mover_entry(a1, None, a2, None, 0.0, 0, n_patients, "")
            continue
        out[f"roc_auc.{c}"] = _mover_entry(a1, intervals.auc_interval(a1, m, n, level), a2,
                                           intervals.auc_interval(a2, m, n, level),
                                           intervals.delong_correlation(pos, sa, sb), n_all, n_patients,
                                           "MOVER of Newcombe score intervals, DeLong correlation")
        out[f"roc_auc.{c}"]["positives"] = len(set(patients[pos]))
    return out


# ---------------------------------------------------------------- power
def _want_each(want: float, k: int) -> float:
    """The power each of ``k`` checks needs so that all of them pass together with at least ``want``
    (Bonferroni: 1 - P(all pass) <= sum of the checks' 1 - power)."""
    return 1 - (1 - want) / max(k, 1)


def check_power(d: dict, margin: float, level: float, want: float, planning: float | None = None,
                plan: bool = True) -> dict:
    """Power of one non-inferiority check now, for two equally good models, and the comparison patients that
    would give it ``want`` power (None when it has it, or without ``plan``: the verdict does not read it), with a
    range for a paired proportion (the planning discordance at the bounds of its interval).

    A paired proportion plans the discordance of two *equal* models from the candidate's exclusive wins
    (``planning``: the user's ``gate.planning_discordance`` instead); a MOVER check plans the standard error of
    the difference as MOVER's lower half-width for a candidate with the champion's own interval and the observed
    correlation (what a candidate as good as the champion would give)."""
    from scipy.stats import norm

    n = float(d.get("n") or 0)
    patients = int(d.get("patients") or 0)
    if d.get("ci") is None or n <= 0:
        return {"power": 0.0, "planning": None, "patients_needed": None, "patients_needed_range": None}
    scale = patients / n  # effective -> real patients
    z = intervals.z_value(level)

    def in_patients(v):
        return None if v is None else math.ceil(v * scale)

    if d["kind"] == "proportion":
        psi = planning if planning is not None else intervals.planning_discordance(d["b"], n)
        lo, hi = (psi, psi) if planning is not None else intervals.discordance_range(d["b"], n, level)
        power = intervals.tango_power(n, psi, margin, level)

        def need_at(p: float):
            return intervals.patients_for_power(lambda m: intervals.tango_power(m, p, margin, level), n, want)

        planned = {"discordance": round(psi, 4), "discordance_range": [round(lo, 4), round(hi, 4)],
                "from": "gate.planning_discordance" if planning is not None else
                "the candidate's exclusive wins: (2b + 1) / (n + 2)"}
        if power >= want or not plan:
            return {"power": round(power, 3), "planning": planned, "patients_needed": None,
                    "patients_needed_range": None}
        rng = [in_patients(need_at(p)) for p in (lo, hi)]
        return {"power": round(power, 3), "planning": planned, "patients_needed": in_patients(need_at(psi)),
                "patients_needed_range": rng}
    r = float(d.get("correlation") or 0.0)
    champ, champ_ci = d["champion"], d.get("champion_ci") or d["ci"]
    below, above = champ - champ_ci[0], champ_ci[1] - champ
    # MOVER's lower half-width for a candidate with the champion's own interval
    se = max(math.sqrt(max(below ** 2 + above ** 2 - 2 * r * below * above, 0.0)) / z, 1e-6)
    power = intervals.normal_power(n, n, se, margin, level)
    planned = {"standard_error": round(se, 4), "from": "MOVER for a candidate with the champion's interval and "
               "this correlation"}
    need = None if power >= want or not plan else n * (se * (z + float(norm.ppf(want))) / margin) ** 2
    return {"power": round(power, 3), "planning": planned, "patients_needed": in_patients(need),
            "patients_needed_range": None}


def joint_power(checks: list[dict]) -> float:
    """A lower bound of the probability that all the checks pass for two equally good models (Bonferroni:
    1 - the sum of each check's 1 - power); the exact joint power of the whole gate is simulated by
    ``python -m benchmarks.gate_oc``."""
    return max(0.0, 1.0 - sum(1.0 - float(c.get("power") or 0.0) for c in checks))


# ---------------------------------------------------------------- checks
def status_of(ci, margin: float, powered: bool) -> str:
    """passed (lower bound above -margin), failed (the whole interval below 0: shown worse, whatever the power;
    or an interval that cannot exclude a loss of the margin when the comparison was powered), else
    inconclusive."""
    if ci is None:
        return "inconclusive"
    lower, upper = ci
    if lower > -margin:
        return "passed"
    if upper < 0:
        return "failed"
    return "failed" if powered else "inconclusive"


def non_inferiority_checks(paired: dict[str, dict], gate, level: float = 0.95, plan: bool = True) -> list[dict]:
    """The candidate may be worse than the champion by less than the margin, with confidence; each check with
    its power and status (:func:`status_of`); a check that cannot tell is *inconclusive* while the comparison as
    a whole is underpowered (:func:`joint_power` below ``gate.min_power``)."""
    entries = {m: d for m, d in paired.items() if m in GATED_BASE or m.startswith("roc_auc.")}
    want = _want_each(gate.min_power, len(entries))
    checks = []
    for metric, d in entries.items():
        margin = gate.margin(metric)
        ci = d["ci"]
        power = check_power(d, margin, level, want, gate.planning_discordance, plan)
        check = {
            "check": f"{metric}: candidate - champion, lower CI bound > -{margin}", "kind": "non_inferiority",
            "metric": metric, "value": d["difference"], "ci": list(ci) if ci else None, "margin": margin,
            "candidate": d["candidate"], "champion": d["champion"], "patients": d.get("patients"),
            "count": "patients", "method": d.get("method"), **power,
            "superior": ci is not None and ci[0] > 0}
        for key in ("positives", "b", "c", "design_effect", "discordant_images"):
            if key in d:
                check[key] = _r(d[key], 2)
        checks.append(check)
    joint = joint_power(checks)
    for check in checks:
        margin, ci = check["margin"], check["ci"]
        check["status"] = status_of(ci, margin, joint >= gate.min_power)
        check["joint_power"] = round(joint, 3)
        if ci is None:
            check["note"] = "no interval: a class is missing among the comparison patients"
        elif check["status"] == "failed" and ci[1] < 0:
            check["note"] = f"shown worse: the whole interval is below 0 (upper bound {ci[1]})"
        elif check["status"] == "failed":
            check["note"] = (f"its interval does not exclude a loss of the margin {margin}, and the comparison was "
                             f"powered (all {len(checks)} checks together: {joint:.0%} for two equal models, "
                             f"gate.min_power {gate.min_power})")
        elif check["status"] == "inconclusive":
            check["note"] = (f"inconclusive: its interval contains 0 and reaches below -{margin}; the comparison "
                             f"has {joint:.0%} power for two equal models (gate.min_power {gate.min_power})"
                             + ("" if gate.on_underpowered == "fail" else
                                " — not blocking: gate.on_underpowered is thresholds_only"))
        check["passed"] = check["status"] == "passed" or (
            check["status"] == "inconclusive" and gate.on_underpowered == "thresholds_only")
    return checks


def needs_patients(checks: list[dict], patients: int) -> dict | None:
    """The comparison patients (at this class mix) that would give all checks together ``gate.min_power``, the
    check that needs the most and the range of its need; None when no check needs more."""
    needy = [c for c in checks if c.get("patients_needed")]
    if not needy:
        return None
    worst = max(needy, key=lambda c: c["patients_needed"])
    return {"patients": worst["patients_needed"], "range": worst.get("patients_needed_range"),
            "check": worst["metric"], "margin": worst["margin"], "now": patients}


def comparison_summary(checks: list[dict], patients: int, gate) -> str | None:
    """One sentence: which comparison checks failed, and what an inconclusive comparison would take."""
    open_ = [c for c in checks if c.get("status") == "inconclusive"]
    failed = [c for c in checks if c.get("status") == "failed"]
    verdict = (f"Failed against the champion on {', '.join(c['metric'] for c in failed)} ("
               + "; ".join(c.get("note", "") for c in failed) + ")") if failed else None
    if not open_:
        return verdict + "." if verdict else None
    need = needs_patients(checks, patients)
    joint = checks[0].get("joint_power", 0.0) if checks else 0.0
    head = (f"Inconclusive: {patients} test patients new to both models cannot tell whether the candidate is worse "
            f"than the champion by the margin on {', '.join(c['metric'] for c in open_)} (their intervals contain "
            f"0; power of the {len(checks)} checks together for two equal models: {joint:.0%})")
    if need:
        rng = need.get("range")
        tail = (f"; {gate.min_power:.0%} power needs ≈{need['patients']:,} such patients"
                + (f" (range {rng[0]:,}–{rng[1]:,} over the interval of the discordance)" if rng and all(rng) else "")
                + f", set by {need['check']} at margin {need['margin']} (per check, each at "
                f"{_want_each(gate.min_power, len(checks)):.1%} so that all pass together)")
    else:
        tail = "; some checks have no interval on these patients"
    what = (" — decided on the absolute thresholds (gate.on_underpowered: thresholds_only)."
            if gate.on_underpowered == "thresholds_only" else
            " — the gate fails until then, or set gate.on_underpowered: thresholds_only.")
    return (verdict + ". " if verdict else "") + head + tail + ("." if verdict else what)
