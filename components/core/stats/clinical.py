"""Clinical-grade evaluation maths: patient-level CIs, temperature scaling, operating points.

* **CIs on patients** (:mod:`components.core.stats.intervals`): Clopper-Pearson for sensitivity, specificity and
  accuracy on the effective number of patients, Newcombe's score interval for ROC-AUC, a Dirichlet posterior
  of the confusion matrix for macro F1; none collapses to a point at 0 or 1. ECE gets no interval: it is biased
  upward on few images (a percentile bootstrap of it covered a calibrated model's ECE of 0 in 0 of 300
  simulated sets of 49 images), so it comes with the ECE a perfectly calibrated model with the same confidences
  would show on as many images (:func:`calibrated_ece_reference`).
* **Temperature scaling** (Guo et al. 2017): one scalar T > 0 fitted on the validation split by
  minimising the negative log-likelihood of softmax(logits / T). It keeps each image's argmax (the
  predicted class), but **not** the ranking of one class's scores across images once there are 3 or more
  classes: softmax(z / T)_c depends on the other logits too, so two images can swap order in class c (the
  one-vs-rest ROC-AUC and the thresholds of the operating points can move). Thresholds are chosen on the
  calibrated probabilities that serving returns, so they stay consistent.
* **Operating points**: per-class thresholds chosen on the validation split with the conformal rank: among
  the ``n`` positive validation *patients* (each by the lowest score of their images), the
  ``ceil(target * (n + 1))``-th highest. A new positive patient from the same population then scores at or
  above it with probability of approximately at least ``target`` (expected sensitivity ``k / (n + 1)``; the
  sensitivity itself is Beta(k, n - k + 1) over validation draws, whose lower quantile is reported).
  *Approximately*: the conformal promise is exact for scores that do not depend on the validation split, and
  the same split also chose the best epoch and the temperature. Too few positives for the target is refused.
  Then reported (sensitivity, specificity, PPV, NPV) on data that did not choose them.
"""

from __future__ import annotations

import math

import numpy as np


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of softmax(logits / T)."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.25, 20.0)) -> float:
    """T minimising the NLL on (logits, y); a bounded 1-D search over log T (the NLL is smooth there).

    When every validation image is already classified correctly the NLL keeps falling as T → 0, so
    the "fit" would only be the search bound: the model would become certain of everything. Then
    T stays 1 (nothing on this split says how confident the model should be).
    """
    from scipy.optimize import minimize_scalar

    if len(y) == 0 or (logits.argmax(axis=1) == y).all():
        return 1.0
    res = minimize_scalar(lambda lt: nll(logits, y, float(np.exp(lt))), bounds=np.log(bounds), method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x))


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    return _softmax(logits / temperature)


# ---------------------------------------------------------------- operating points
def threshold_for_sensitivity(scores: np.ndarray, positive: np.ndarray, target: float) -> float | None:
    """The highest threshold t with in-sample sensitivity (scores >= t among positives) >= target (the matched
    operating points of the gate; :func:`conformal_threshold` chooses the served ones)."""
    pos = np.sort(scores[positive])[::-1]
    if len(pos) == 0:
        return None
    k = int(np.ceil(target * len(pos) - 1e-9))  # how many positives must be at or above t
    return float(pos[max(k, 1) - 1])


def min_positive_patients(target: float) -> int:
    """The fewest positive patients for which the conformal rank ``ceil(target * (n + 1))`` exists (<= n)."""
    n = 1
    while int(np.ceil(target * (n + 1) - 1e-9)) > n:
        n += 1
    return n


def conformal_threshold(scores: np.ndarray, positive: np.ndarray, patients: np.ndarray | None, target: float,
                        level: float = 0.95, name: str = "") -> dict | None:
    """The served threshold for ``target`` sensitivity from validation scores: per positive patient the lowest
    score of their images, the ``k = ceil(target * (n + 1))``-th highest of the ``n`` patients. Returns the exact
    threshold, ``k``, ``n``, the expected out-of-sample sensitivity ``k / (n + 1)`` and its one-sided lower
    bound at ``level`` (the ``1 - level`` quantile of Beta(k, n - k + 1)); None without positives.
    Raises :class:`ParamsError` when ``n`` is too small for the target."""
    from scipy.stats import beta

    from components.core.contract.errors import ParamsError

    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        return None
    ids = (np.asarray(patients).astype(str) if patients is not None else np.arange(len(scores)).astype(str))[positive]
    per_patient = _group_min(np.asarray(scores, dtype=float)[positive], ids)
    n = len(per_patient)
    k = int(np.ceil(target * (n + 1) - 1e-9))
    if k > n:
        need = min_positive_patients(target)
        raise ParamsError(
            f"evaluate.target_sensitivity.{name or '?'} = {target} cannot be kept with {n} positive validation "
            f"patients: the threshold is the ceil({target} x (n + 1))-th highest patient score, which needs at least "
            f"{need} positive patients. Lower the target to at most {math.floor(1000 * n / (n + 1)) / 1000:.3f} "
            "(n / (n + 1), rounded down), or give the "
            "validation split more patients of this class (split.val_fraction, more data)")
    threshold = float(np.sort(per_patient)[::-1][k - 1])
    return {"threshold": threshold, "rank": k, "positive_patients": n, "rule": "conformal: ceil(target * (n + 1))",
            "expected_sensitivity": round(k / (n + 1), 4),
            "sensitivity_lower_bound": round(float(beta.ppf(1 - level, k, n - k + 1)), 4),
            "lower_bound_level": level}


def _group_min(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The minimum of ``values`` per group (in group order)."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    out = np.full(len(uniq), np.inf)
    np.minimum.at(out, inverse, values)
    return out


def operating_point(scores: np.ndarray, positive: np.ndarray, threshold: float,
                    patients: np.ndarray | None = None, level: float = 0.95) -> dict:
    """The decision ``scores >= threshold`` against ``positive``: counts, ratios and (with ``patients``) the
    patient counts and Clopper-Pearson intervals of sensitivity and specificity on them."""
    from components.core.stats import intervals

    pred = scores >= threshold
    tp = int((pred & positive).sum())
    fp = int((pred & ~positive).sum())
    fn = int((~pred & positive).sum())
    tn = int((~pred & ~positive).sum())

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    out = {"threshold": float(threshold), "sensitivity": ratio(tp, tp + fn),
           "specificity": ratio(tn, tn + fp), "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn),
           "tp": tp, "fp": fp, "fn": fn, "tn": tn}
    if patients is not None:
        patients = np.asarray(patients).astype(str)
        sens = intervals.proportion(pred[positive], patients[positive], level)
        spec = intervals.proportion(~pred[~positive], patients[~positive], level)
        out.update({"positive_patients": len(set(patients[positive])),
                    "negative_patients": len(set(patients[~positive])),
                    "sensitivity_ci": [sens["low"], sens["high"]] if sens else None,
                    "specificity_ci": [spec["low"], spec["high"]] if spec else None})
    return out


def choose_thresholds(y_val: np.ndarray, proba_val: np.ndarray, classes: list[str], targets: dict[str, float],
                      patients: np.ndarray | None = None, level: float = 0.95) -> dict[str, dict]:
    """Per-class thresholds from the validation split only (:func:`conformal_threshold`), with the validation
    operating point at the exact threshold."""
    out = {}
    for c, target in targets.items():
        i = classes.index(c)
        chosen = conformal_threshold(proba_val[:, i], y_val == i, patients, target, level, name=c)
        if chosen is not None:
            op = operating_point(proba_val[:, i], y_val == i, chosen["threshold"], patients, level)
            out[c] = {"target_sensitivity": target, **op, **chosen}
    return out


def apply_thresholds(y: np.ndarray, proba: np.ndarray, classes: list[str], chosen: dict[str, dict],
                     patients: np.ndarray | None = None, level: float = 0.95) -> dict:
    return {c: {"target_sensitivity": v["target_sensitivity"],
                **operating_point(proba[:, classes.index(c)], y == classes.index(c), v["threshold"], patients, level)}
            for c, v in chosen.items()}


# ---------------------------------------------------------------- AUC, resampling, intervals
def auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC by the Mann-Whitney U statistic (ties count half); NaN when one class is absent.
    Equal to sklearn's roc_auc_score, without its per-call overhead (the bootstrap calls it thousands of times)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def patient_resamples(patients: np.ndarray, resamples: int, seed: int, draw_ids: bool = False):
    """Yield image indices of bootstrap resamples drawn by patient: all of a patient's images, or none. With
    ``draw_ids``, yield ``(indices, ids)``: a patient id per image that is distinct for each draw (a patient drawn
    twice is two patients of the resample, not one with twice the images)."""
    uniq, inverse = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in drawn])
        if draw_ids:
            yield idx, np.repeat(np.arange(len(drawn)), [len(members[g]) for g in drawn]).astype(str)
        else:
            yield idx


def macro_f1_posterior(y: np.ndarray, pred: np.ndarray, patients: np.ndarray, k: int, level: float = 0.95,
                       draws: int = 4000, seed: int = 0) -> tuple[float, float] | None:
    """An interval for macro F1 that does not collapse at 1: each true class's row of the confusion matrix is
    drawn from its Dirichlet posterior (Jeffreys prior 1/2, counts scaled to the class's effective patients), and
    the class shares from theirs (the image shares scaled to all the effective patients: a test split's class mix
    is drawn too, and F1 depends on it through the false positives); the equal-tailed ``level`` quantiles of the
    macro F1 of the draws,
    widened to hold the observed macro F1 (with no error the prior keeps every draw below 1; as with Jeffreys'
    interval for a proportion, the upper bound is then 1)."""
    from components.core.stats import intervals

    present = [i for i in range(k) if (y == i).any()]
    if not present:
        return None
    rng = np.random.default_rng(seed)
    n_all = intervals.kish_n(intervals.cluster_sizes(patients))
    share = np.zeros((draws, k))
    share[:, present] = rng.dirichlet([np.mean(y == i) * n_all + 0.5 for i in present], size=draws)
    rows = np.zeros((draws, k, k))
    for i in present:
        counts = np.bincount(pred[y == i], minlength=k).astype(float)
        scale = intervals.kish_n(intervals.cluster_sizes(patients[y == i])) / counts.sum()
        rows[:, i, :] = rng.dirichlet(counts * scale + 0.5, size=draws)
    joint = rows * share[:, :, None]  # P(true i, predicted j)
    f1 = []
    for c in present:
        tp = joint[:, c, c]
        fp = joint[:, :, c].sum(axis=1) - tp
        fn = joint[:, c, :].sum(axis=1) - tp
        f1.append(2 * tp / np.maximum(2 * tp + fp + fn, 1e-300))
    macro = np.mean(f1, axis=0)
    lo, hi = np.quantile(macro, [(1 - level) / 2, (1 + level) / 2])
    observed = [2 * np.sum((y == c) & (pred == c)) / max(np.sum(y == c) + np.sum(pred == c), 1) for c in present]
    point = float(np.mean(observed))
    return min(float(lo), point), max(float(hi), point)


def confidence_intervals(y: np.ndarray, proba: np.ndarray, patients: np.ndarray, classes: list[str],
                         resamples: int = 1000, seed: int = 0, level: float = 0.95, ece_bins: int = 10) -> dict:
    """CIs of the test metrics on **patients** (:mod:`components.core.stats.intervals`): Clopper-Pearson for accuracy
    and per-class sensitivity/specificity (with their positive/negative patient counts), Newcombe's score
    interval per class ROC-AUC (macro: the mean of the class bounds, conservative), the Dirichlet posterior for
    macro F1; ECE with the calibrated reference of :func:`calibrated_ece_reference` (``resamples`` draws; 0:
    none) instead of an interval."""
    from components.core.stats import intervals
    from components.core.stats.metrics import expected_calibration_error

    y, proba, patients = np.asarray(y), np.asarray(proba, dtype=float), np.asarray(patients).astype(str)
    k = len(classes)
    if len(y) == 0:
        return {}
    pred = proba.argmax(axis=1)
    out = {"resamples": resamples, "seed": seed, "level": level, "unit": "patient",
           "patients": len(np.unique(patients)),
           "method": {"accuracy, sensitivity, specificity": "Clopper-Pearson on effective patients (Kish)",
                      "roc_auc": "Newcombe score interval (Hanley-McNeil variance) on effective patients; macro: "
                                 "mean of the class bounds",
                      "macro_f1": "Dirichlet posterior of each class's confusion row (Jeffreys prior)",
                      "ece": "no interval (biased upward at small n); the ECE of a perfectly calibrated model "
                             "with the same confidences, simulated"},
           "accuracy": _ci_entry(intervals.proportion(pred == y, patients, level))}
    f1 = macro_f1_posterior(y, pred, patients, k, level, seed=seed)
    from components.core.stats.metrics import classification_metrics

    point = classification_metrics(y, proba, classes, ece_bins)
    out["macro_f1"] = ({"point": point["macro_f1"], "low": round(f1[0], 4), "high": round(f1[1], 4)}
                       if f1 and point["macro_f1"] is not None else None)
    out["per_class"] = {}
    auc_bounds = []
    for i, c in enumerate(classes):
        pos = y == i
        sens = intervals.proportion(pred[pos] == i, patients[pos], level)
        spec = intervals.proportion(pred[~pos] != i, patients[~pos], level)
        entry: dict = {"sensitivity": _ci_entry(sens, "positives"), "specificity": _ci_entry(spec, "negatives"),
                       "roc_auc": None}
        area = auc(pos, proba[:, i])
        if np.isfinite(area):
            m = intervals.kish_n(intervals.cluster_sizes(patients[pos]))
            n = intervals.kish_n(intervals.cluster_sizes(patients[~pos]))
            lo, hi = intervals.auc_interval(area, m, n, level)
            entry["roc_auc"] = {"point": round(area, 4), "low": round(lo, 4), "high": round(hi, 4),
                                "positives": len(set(patients[pos])), "negatives": len(set(patients[~pos]))}
            auc_bounds.append((area, lo, hi))
        out["per_class"][c] = entry
    if auc_bounds:
        a = np.array(auc_bounds)
        out["macro_roc_auc"] = {"point": round(float(a[:, 0].mean()), 4), "low": round(float(a[:, 1].mean()), 4),
                                "high": round(float(a[:, 2].mean()), 4)}
    else:
        out["macro_roc_auc"] = None
    out["ece"] = None
    if resamples:
        ref = calibrated_ece_reference(proba, ece_bins, resamples, seed, level)
        point = expected_calibration_error(y, proba, ece_bins)
        out["ece"] = {"point": round(point, 4), "calibrated_reference": ref,
                      "note": f"ECE is biased upward on few images: a perfectly calibrated model with these "
                              f"confidences would show about {ref['median']:.3f} here ({100 * level:.0f}% of the "
                              f"time at most {ref['high']:.3f}); no interval is given"}
    return out


def calibrated_ece_reference(proba: np.ndarray, bins: int, draws: int, seed: int = 0,
                             level: float = 0.95) -> dict:
    """The ECE a perfectly calibrated model would show on these images: each image's top-class confidence kept,
    its correctness drawn as Bernoulli(confidence); the median and the ``level`` quantile over ``draws``. An
    observed ECE above the quantile is evidence of miscalibration; one below it is not evidence of calibration.
    (Images are drawn independently: a patient's images that err together make the real spread wider.)"""
    conf = np.asarray(proba, dtype=float).max(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    onehot = np.zeros((len(conf), bins))
    onehot[np.arange(len(conf)), idx] = 1.0
    rng = np.random.default_rng(seed)
    correct = (rng.random((draws, len(conf))) < conf).astype(float)
    ece = np.abs(correct @ onehot - conf @ onehot).sum(axis=1) / max(len(conf), 1)
    return {"median": round(float(np.median(ece)), 4), "high": round(float(np.quantile(ece, level)), 4),
            "level": level, "draws": draws}


def _ci_entry(stats: dict | None, count_name: str = "patients") -> dict | None:
    """An interval entry of metrics.json: point, low, high and the patient count it rests on."""
    if stats is None:
        return None
    entry = {"point": stats["point"], "low": stats["low"], "high": stats["high"], count_name: stats["patients"],
             "images": stats["images"]}
    if stats["effective_patients"] is not None and stats["effective_patients"] < stats["patients"] - 0.005:
        entry["effective_patients"] = stats["effective_patients"]
    return entry
