"""Clinical-grade evaluation maths: patient-level bootstrap CIs, temperature scaling, operating points.

* **Bootstrap by patient**: resample patients with replacement and take all of each patient's images,
  so correlated images of one person never look like independent evidence.
* **Temperature scaling** (Guo et al. 2017): one scalar T > 0 fitted on the validation split by
  minimising the negative log-likelihood of softmax(logits / T); it changes confidence, not ranking.
* **Operating points**: per-class thresholds chosen on the validation split to reach a target
  sensitivity, then reported (sensitivity, specificity, PPV, NPV) on data that did not choose them.
"""

from __future__ import annotations

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
    """The highest threshold t with sensitivity (scores >= t among positives) >= target."""
    pos = np.sort(scores[positive])[::-1]
    if len(pos) == 0:
        return None
    k = int(np.ceil(target * len(pos)))  # how many positives must be at or above t
    return float(pos[max(k, 1) - 1])


def operating_point(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    pred = scores >= threshold
    tp = int((pred & positive).sum())
    fp = int((pred & ~positive).sum())
    fn = int((~pred & positive).sum())
    tn = int((~pred & ~positive).sum())

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {"threshold": round(float(threshold), 6), "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp), "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def choose_thresholds(y_val: np.ndarray, proba_val: np.ndarray, classes: list[str],
                      targets: dict[str, float]) -> dict[str, dict]:
    """Per-class thresholds from the validation split only."""
    out = {}
    for c, target in targets.items():
        i = classes.index(c)
        t = threshold_for_sensitivity(proba_val[:, i], y_val == i, target)
        if t is not None:
            out[c] = {"target_sensitivity": target, **operating_point(proba_val[:, i], y_val == i, t)}
    return out


def apply_thresholds(y: np.ndarray, proba: np.ndarray, classes: list[str], chosen: dict[str, dict]) -> dict:
    return {c: {"target_sensitivity": v["target_sensitivity"],
                **operating_point(proba[:, classes.index(c)], y == classes.index(c), v["threshold"])}
            for c, v in chosen.items()}


# ---------------------------------------------------------------- bootstrap
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


def _point_metrics(y: np.ndarray, proba: np.ndarray, k: int) -> dict[str, float]:
    """The bootstrapped statistics: accuracy, macro F1, per-class sensitivity/specificity/AUC, macro AUC."""
    pred = proba.argmax(axis=1)
    out = {"accuracy": float((pred == y).mean())}
    f1s, aucs = [], []
    for i in range(k):
        pos, hit = y == i, pred == i
        tp, fp, fn = (pos & hit).sum(), (~pos & hit).sum(), (pos & ~hit).sum()
        tn = len(y) - tp - fp - fn
        sens = tp / (tp + fn) if tp + fn else np.nan
        spec = tn / (tn + fp) if tn + fp else np.nan
        prec = tp / (tp + fp) if tp + fp else 0.0
        f1s.append((2 * prec * sens / (prec + sens) if prec + sens > 0 else 0.0) if pos.any() else np.nan)
        area = auc(pos, proba[:, i])
        aucs.append(area)
        out[f"sensitivity.{i}"], out[f"specificity.{i}"], out[f"roc_auc.{i}"] = sens, spec, area
    out["macro_f1"] = float(np.nanmean(f1s)) if not np.all(np.isnan(f1s)) else np.nan
    out["macro_roc_auc"] = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else np.nan
    return out


def patient_resamples(patients: np.ndarray, resamples: int, seed: int):
    """Yield image indices of bootstrap resamples drawn by patient: all of a patient's images, or none."""
    uniq, inverse = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])


def bootstrap_ci(y: np.ndarray, proba: np.ndarray, patients: np.ndarray, classes: list[str],
                 resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile CIs from resampling **patients** with replacement (all of a patient's images move together)."""
    y, proba, patients = np.asarray(y), np.asarray(proba, dtype=float), np.asarray(patients).astype(str)
    k = len(classes)
    if len(y) == 0:
        return {}
    samples: dict[str, list[float]] = {}
    for idx in patient_resamples(patients, resamples, seed):
        for key, v in _point_metrics(y[idx], proba[idx], k).items():
            samples.setdefault(key, []).append(v)
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    point = _point_metrics(y, proba, k)

    def ci(key: str) -> dict | None:
        arr = np.array(samples[key], dtype=float)
        arr = arr[np.isfinite(arr)]
        if len(arr) < max(10, resamples // 10) or not np.isfinite(point[key]):
            return None
        return {"point": round(float(point[key]), 4), "low": round(float(np.percentile(arr, lo_q)), 4),
                "high": round(float(np.percentile(arr, hi_q)), 4)}

    out = {"resamples": resamples, "seed": seed, "level": level, "unit": "patient",
           "patients": len(np.unique(patients)),
           "accuracy": ci("accuracy"), "macro_f1": ci("macro_f1"), "macro_roc_auc": ci("macro_roc_auc"),
           "per_class": {}}
    for i, c in enumerate(classes):
        out["per_class"][c] = {"sensitivity": ci(f"sensitivity.{i}"), "specificity": ci(f"specificity.{i}"),
                               "roc_auc": ci(f"roc_auc.{i}")}
    return out
