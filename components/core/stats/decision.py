"""The gate's decision from scores: every check on the candidate's served decision and, with a champion, the
paired comparison, then one verdict. ``components/gate.py`` calls it on the real test split; the benchmark
``python -m benchmarks.gate_oc`` calls the same functions on thousands of simulated pairs, so the operating
characteristic it measures is that of this code.
"""

from __future__ import annotations

import numpy as np

from components.core.stats import comparison, gating


def candidate_checks(y: np.ndarray, p_cand: np.ndarray, patients: np.ndarray, classes: list[str],
                     cand_thresholds: dict[str, float], gate, level: float,
                     train_summary: dict | None = None) -> tuple[dict[str, dict], list[dict]]:
    """(the candidate's served metrics with their intervals, the absolute-threshold and training checks)."""
    stats = comparison.served_intervals(y, p_cand, patients, classes, cand_thresholds, level)
    checks = gating.threshold_checks(stats, gate, len(set(np.asarray(patients).astype(str))))
    checks.append(gating.training_check(train_summary, y, p_cand))
    return stats, checks


def champion_checks(y: np.ndarray, p_cand: np.ndarray, p_champ: np.ndarray, patients: np.ndarray,
                    classes: list[str], compared: list[str], gate, level: float, resamples: int,
                    seed: int, plan: bool = True) -> tuple[list[dict], dict]:
    """(the non-inferiority checks against the champion, what the comparison says: which checks could not tell,
    the joint power, the patients it would take and one summary sentence; without ``plan``, not the patients: the
    verdict does not read them)."""
    paired = comparison.paired_comparison(y, p_cand, p_champ, patients, classes, compared, level, resamples, seed)
    checks = comparison.non_inferiority_checks(paired, gate, level, plan)
    used = len(set(np.asarray(patients).astype(str)))
    need = comparison.needs_patients(checks, used)
    info = {"inconclusive": [c["metric"] for c in checks if c["status"] == "inconclusive"],
            "joint_power": checks[0]["joint_power"] if checks else None,
            "patients_needed": need["patients"] if need else None,
            "patients_needed_range": need["range"] if need else None,
            "patients_needed_by": f"{need['check']} at margin {need['margin']} (per check)" if need else None,
            "min_power": gate.min_power, "on_underpowered": gate.on_underpowered,
            "summary": comparison.comparison_summary(checks, used, gate)}
    return checks, info


def verdict(checks: list[dict]) -> dict:
    """``passed`` (every check passed, an inconclusive one counting as passed under
    ``gate.on_underpowered: thresholds_only``), ``decision`` (failed: a check failed outright; inconclusive: a
    comparison could not tell; passed) and the failed checks."""
    hard = [c for c in checks if not c["passed"] and c.get("status") != "inconclusive"]
    open_ = [c for c in checks if c.get("status") == "inconclusive"]
    return {"passed": all(c["passed"] for c in checks),
            "decision": "failed" if hard else "inconclusive" if open_ else "passed",
            "failed": [c["check"] for c in checks if not c["passed"]]}
