"""Confidence intervals and power for the sample sizes users have: a few dozen patients, a handful per class.

A percentile bootstrap cannot leave 0 or 1 (8 of 8 COVID patients found gives [1.0, 1.0]) and a paired
bootstrap of two identical-looking models collapses to [0, 0]. These intervals do not:

* **Proportions** (sensitivity, specificity, accuracy): Clopper-Pearson ("exact"), on the *patient* count.
  A patient's images are not independent evidence: the image-level proportion is kept as the point, and the
  sample size is Kish's effective number of patients ``(Σ m_i)² / Σ m_i²`` for ``m_i`` images per patient
  (exact when a patient's images agree, conservative otherwise). 8/8 gives [0.63, 1.0].
* **Paired difference of proportions** (candidate minus champion on the same patients): Tango's (1998)
  score interval from the discordant counts ``b`` (only the candidate right) and ``c`` (only the champion
  right), divided by the design effect of the patients' clustering (Rao-Scott, with Obuchowski's 1998
  cluster variance of the discordance; Kish's when nothing is discordant): a patient whose images all flip
  counts once, discordant images of different patients count apart. Simulated coverage:
  ``benchmarks/small_n.py``.
* **ROC-AUC**: Newcombe's (2006) score-type interval (method 5: the Hanley-McNeil variance with ``m - 1`` and
  ``n - 1`` both replaced by ``N* - 1 = (m + n)/2 - 1``, solved for the AUC), which stays inside (0, 1) and does
  not collapse at 1;
  a paired AUC difference is the MOVER combination (Zou & Donner 2008) of the two models' intervals with
  the DeLong correlation of their estimates.
* **Power of a non-inferiority check**: under the planning assumption that the two models are equally good,
  the probability that the interval's lower bound clears ``-margin`` (exact over the discordant counts for a
  paired proportion; normal for the others), and the number of patients that would give the wanted power. The
  planning discordance of two *equal* models is read from the candidate's exclusive wins alone
  (:func:`planning_discordance`): the candidate's own excess errors would otherwise raise it, lower the power
  and turn a worse candidate's "failed" into "inconclusive".
"""

from __future__ import annotations

import functools
import math

import numpy as np

EPS = 1e-12


def z_value(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf((1 + level) / 2))


def kish_n(sizes) -> float:
    """Kish's effective sample size of clusters with ``sizes`` members: ``(Σ m)² / Σ m²`` (the number of
    clusters when they are equal; fewer when a few patients hold most of the images)."""
    m = np.asarray(sizes, dtype=float)
    m = m[m > 0]
    return float(m.sum() ** 2 / (m ** 2).sum()) if len(m) else 0.0


def cluster_sizes(groups) -> np.ndarray:
    """Images per patient of ``groups`` (one patient id per image)."""
    if len(groups) == 0:
        return np.zeros(0, int)
    return np.unique(np.asarray(groups).astype(str), return_counts=True)[1]


# ---------------------------------------------------------------- one proportion
def clopper_pearson(k: float, n: float, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) interval of ``k`` successes in ``n`` trials (``k`` may be fractional: an
    effective count); None without trials."""
    from scipy.stats import beta

    if n <= 0:
        return None
    k = min(max(k, 0.0), n)
    a = 1 - level
    lo = 0.0 if k <= EPS else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k >= n - EPS else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def wilson(k: float, n: float, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of ``k`` of ``n``."""
    if n <= 0:
        return None
    z = z_value(level)
    p = min(max(k / n, 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(hits, groups, level: float = 0.95) -> dict | None:
    """Point (image share) and Clopper-Pearson interval on the effective patient count of the images ``hits``
    (booleans) of the patients ``groups``; None for no images."""
    hits = np.asarray(hits, dtype=bool)
    if len(hits) == 0:
        return None
    sizes = cluster_sizes(groups)
    n_eff = kish_n(sizes)
    p = float(hits.mean())
    lo, hi = clopper_pearson(p * n_eff, n_eff, level)
    return {"point": _r(p), "low": _r(lo), "high": _r(hi), "patients": len(sizes), "images": len(hits),
            "effective_patients": _r(n_eff, 2), "method": "clopper-pearson (effective patients)"}


# ---------------------------------------------------------------- paired difference of proportions
def _tango_z(b, c, n, d0):
    """Tango's score statistic for H0: p1 - p2 = d0 (vectorised over any argument)."""
    b, c, n, d0 = (np.asarray(v, dtype=float) for v in (b, c, n, d0))
    a_ = 2 * n
    b_ = -b - c + (2 * n - b + c) * d0
    c_ = -c * d0 * (1 - d0)
    q21 = (np.sqrt(np.maximum(b_ * b_ - 4 * a_ * c_, 0.0)) - b_) / (2 * a_)
    var = np.maximum(n * (2 * q21 + d0 * (1 - d0)), EPS)
    return (b - c - n * d0) / np.sqrt(var)


def tango_interval(b, c, n, level: float = 0.95, iterations: int = 60):
    """Tango's score interval for the paired difference ``(b - c) / n`` (vectorised: arrays of tables give
    arrays of bounds). ``b``: pairs where only the first is a success, ``c``: only the second."""
    z = z_value(level)
    b, c, n = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (b, c, n)))
    d = np.where(n > 0, (b - c) / np.where(n > 0, n, 1), 0.0)

    def solve(target: float, lo, hi):
        # the statistic falls as d0 rises: bisect for Z(d0) = target between lo and hi
        lo, hi = lo.copy(), hi.copy()
        for _ in range(iterations):
            mid = (lo + hi) / 2
            above = _tango_z(b, c, n, mid) > target
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return (lo + hi) / 2

    minus1, plus1 = np.full_like(d, -1 + 1e-9), np.full_like(d, 1 - 1e-9)
    lower = solve(z, minus1, d)
    upper = solve(-z, d, plus1)
    lower = np.where(_tango_z(b, c, n, minus1) <= z, -1.0, lower)
    upper = np.where(_tango_z(b, c, n, plus1) >= -z, 1.0, upper)
    return np.minimum(lower, d), np.maximum(upper, d)


def paired_design_effect(first, second, groups) -> float:
    """How much the clustering of images in patients inflates the variance of the paired difference: the
    cluster variance of the discordance under no difference (Obuchowski 1998: the patients' own ``b_k - c_k``,
    ``Σ (b_k - c_k)²``) over the variance the images would have if independent (``B + C``), with one pseudo-
    discordance at Kish's design effect (``images / Kish's n``, exact when a patient's images always agree) so
    that a few discordant images cannot claim independence; at least 1 (exactly 1 with one image per patient).
    No discordance at all: Kish's."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if len(first) == 0:
        return 1.0
    _, inverse, sizes = np.unique(np.asarray(groups).astype(str), return_inverse=True, return_counts=True)
    kish = len(first) / kish_n(sizes)
    disc = int((first != second).sum())
    if disc == 0:
        return kish
    d = np.bincount(inverse, weights=(first & ~second).astype(float) - (~first & second).astype(float))
    return max(1.0, (float((d ** 2).sum()) + kish) / (disc + 1))


def paired_counts(first, second, groups) -> dict:
    """Discordant counts of two paired success indicators (one per image), divided by the design effect of the
    patients' clustering (:func:`paired_design_effect`; Rao and Scott's adjustment): ``b`` only the first right,
    ``c`` only the second, ``n`` the effective number of independent pairs."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    images = len(first)
    deff = paired_design_effect(first, second, groups)
    return {"b": float((first & ~second).sum()) / deff, "c": float((~first & second).sum()) / deff,
            "n": images / deff, "design_effect": round(deff, 3), "images": images,
            "patients": len(cluster_sizes(groups)), "discordant_images": int((first != second).sum())}


def paired_difference(first, second, groups, level: float = 0.95) -> dict | None:
    """The paired difference of two success rates (first - second) with Tango's interval on effective
    patients; None for no images."""
    counts = paired_counts(first, second, groups)
    if counts["images"] == 0:
        return None
    lo, hi = tango_interval(counts["b"], counts["c"], counts["n"], level)
    p1, p2 = float(np.mean(first)), float(np.mean(second))
    return {"first": _r(p1), "second": _r(p2), "difference": _r(p1 - p2), "ci": (_r(float(lo)), _r(float(hi))),
            "method": "tango score interval (design effect of the patients: Rao-Scott, Obuchowski)", **counts}


# ---------------------------------------------------------------- ROC-AUC
def _hm_variance(theta, m: float, n: float):
    """Hanley-McNeil variance of an AUC, ``θ(1-θ)/(mn) · [1 + (m-1)(1-θ)/(2-θ) + (n-1)θ/(1+θ)]``, with
    Newcombe's (2006, method 4/5) symmetrisation: both ``m - 1`` and ``n - 1`` become ``N* - 1`` with
    ``N* = (m + n)/2``. With ``m = n`` it is exactly Hanley and McNeil's (1982) variance."""
    theta = np.asarray(theta, dtype=float)
    multiplier = (m + n) / 2 - 1
    return theta * (1 - theta) / (m * n) * (1 + multiplier * ((1 - theta) / (2 - theta) + theta / (1 + theta)))


def auc_interval(auc: float, n_pos: float, n_neg: float, level: float = 0.95) -> tuple[float, float] | None:
    """Newcombe's score-type interval for an AUC from ``n_pos`` positive and ``n_neg`` negative (effective)
    patients: the AUCs ``t`` with ``(auc - t)^2 <= z^2 Var(t)``. Never collapses at 0 or 1."""
    from scipy.optimize import brentq

    if not np.isfinite(auc) or n_pos <= 0 or n_neg <= 0:
        return None
    z2 = z_value(level) ** 2

    def f(t: float) -> float:
        return (auc - t) ** 2 - z2 * float(_hm_variance(t, n_pos, n_neg))

    below, above = min(auc, 1 - 1e-9), max(auc, 1e-9)  # f < 0 at the estimate itself (Var > 0 inside (0, 1))
    lo = 0.0 if f(EPS) <= 0 else brentq(f, EPS, below)
    hi = 1.0 if f(1 - EPS) <= 0 else brentq(f, above, 1 - EPS)
    return float(lo), float(hi)


def delong_components(positive, scores) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: per positive, the share of negatives it outranks (ties half); per
    negative, the share of positives that outrank it."""
    positive = np.asarray(positive, dtype=bool)
    s = np.asarray(scores, dtype=float)
    pos, neg = s[positive], s[~positive]
    cmp = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return cmp.mean(axis=1), cmp.mean(axis=0)


def delong_correlation(positive, first, second) -> float:
    """Correlation of two AUC estimates on the same images (DeLong 1988); 0 where a variance vanishes
    (a perfect separation): the conservative choice for MOVER."""
    v10a, v01a = delong_components(positive, first)
    v10b, v01b = delong_components(positive, second)
    m, n = len(v10a), len(v01a)
    if m < 2 or n < 2:
        return 0.0

    def cov(x, y) -> float:
        return float(np.cov(x, y)[0, 1])

    var_a = cov(v10a, v10a) / m + cov(v01a, v01a) / n
    var_b = cov(v10b, v10b) / m + cov(v01b, v01b) / n
    if var_a <= EPS or var_b <= EPS:
        return 0.0
    return float(np.clip((cov(v10a, v10b) / m + cov(v01a, v01b) / n) / math.sqrt(var_a * var_b), -1, 1))


def macro_auc_influence(y, proba, groups, k: int) -> np.ndarray:
    """Each patient's influence on the macro (one-vs-rest, mean over classes present) AUC: the sum over its images
    of the DeLong structural components minus the class AUC, divided by the class's positives or negatives
    (Hoeffding's linearisation: AUC - A ~ the sum of these over all patients), in the order of the sorted
    patient ids. Their sum of squares is DeLong's variance with patients as the unit."""
    y, proba = np.asarray(y), np.asarray(proba, dtype=float)
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    per_image = np.zeros(len(y))
    present = [i for i in range(k) if 0 < (y == i).sum() < len(y)]
    for i in present:
        pos = y == i
        v10, v01 = delong_components(pos, proba[:, i])
        area = float(v10.mean())
        per_image[pos] += (v10 - area) / pos.sum()
        per_image[~pos] += (v01 - area) / (~pos).sum()
    per_image /= max(len(present), 1)
    return np.bincount(inverse, weights=per_image)


def influence_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """The correlation of two estimates from their per-patient influences; 0 (conservative for MOVER) when either
    has no variance (a perfect separation)."""
    va, vb = float(first @ first), float(second @ second)
    if va <= EPS or vb <= EPS:
        return 0.0
    return float(np.clip(first @ second / math.sqrt(va * vb), -1, 1))


def correlation_lower_bound(r: float, n: float, level: float = 0.95) -> float:
    """The lower ``level`` one-sided bound of a correlation ``r`` estimated from ``n`` patients (Fisher's z), at
    least 0: what MOVER reads. A correlation from a handful of patients (a bootstrap of 4 patients says 0.8 as
    easily as 0.2) would otherwise make the interval of a difference too narrow; a smaller one only widens it."""
    if n <= 3 or not np.isfinite(r):
        return 0.0
    from scipy.stats import norm

    z = math.atanh(min(max(r, -1 + 1e-12), 1 - 1e-12)) - float(norm.ppf(level)) / math.sqrt(n - 3)
    return max(0.0, math.tanh(z))


def mover(first: float, first_ci, second: float, second_ci, r: float) -> tuple[float, float]:
    """MOVER interval for ``first - second`` from each estimate's own interval and their correlation
    ``r`` (Zou & Donner 2008; with Wilson intervals and the phi coefficient it is Newcombe's method 10)."""
    (l1, u1), (l2, u2) = first_ci, second_ci
    d = first - second
    lower = d - math.sqrt(max((first - l1) ** 2 + (u2 - second) ** 2 - 2 * r * (first - l1) * (u2 - second), 0.0))
    upper = d + math.sqrt(max((u1 - first) ** 2 + (second - l2) ** 2 - 2 * r * (u1 - first) * (second - l2), 0.0))
    return max(lower, -1.0), min(upper, 1.0)


# ---------------------------------------------------------------- power
def tango_power(n: float, discordance: float, margin: float, level: float = 0.95, sd_range: float = 7.0) -> float:
    """Probability that Tango's lower bound clears ``-margin`` when the two are truly equal and disagree on a
    share ``discordance`` of ``n`` patients: exact over the discordant counts (b, c), trinomial, truncated at
    ``sd_range`` standard deviations."""
    return _tango_power(int(np.rint(n)), float(min(max(discordance, 0.0), 1.0)), float(margin), float(level),
                        float(sd_range))


@functools.lru_cache(maxsize=4096)
def _tango_power(n: int, psi: float, margin: float, level: float, sd_range: float) -> float:
    from scipy.stats import binom

    if n <= 0:
        return 0.0
    if n * psi >= 60:  # many discordant patients expected: Tango's statistic is normal (Connor's formula)
        from scipy.stats import norm

        return float(norm.cdf(margin * math.sqrt(n / psi) - z_value(level)))
    # total discordant k ~ Bin(n, psi); given k, b ~ Bin(k, 1/2)
    mean, sd = n * psi, math.sqrt(max(n * psi * (1 - psi), 0.0))
    ks = np.arange(max(0, int(mean - sd_range * sd) - 1), min(n, int(mean + sd_range * sd) + 2) + 1)
    pk = binom.pmf(ks, n, psi)
    ks, pk = ks[pk > 1e-12], pk[pk > 1e-12]
    # every (k, b) pair at once; b ~ Bin(k, 1/2) truncated the same way
    half = (np.sqrt(ks / 4) * sd_range + 2).astype(int)
    k_all = np.repeat(ks, 2 * half + 1)
    b_all = np.concatenate([np.arange(k // 2 - h, k // 2 + h + 2)[: 2 * h + 1] for k, h in zip(ks, half, strict=True)])
    w_all = np.repeat(pk, 2 * half + 1)
    ok = (b_all >= 0) & (b_all <= k_all)
    k_all, b_all, w_all = k_all[ok], b_all[ok], w_all[ok]
    weight = w_all * binom.pmf(b_all, k_all, 0.5)
    lower, _ = tango_interval(b_all, k_all - b_all, np.full(len(b_all), float(n)), level, iterations=45)
    total = float(weight[lower > -margin].sum())
    return min(1.0, total)


def planning_discordance(b: float, n: float) -> float:
    """The share of patients on which two *equal* models are assumed to disagree, from the candidate's exclusive
    wins ``b`` alone: for equal models ``b`` and ``c`` have the same mean, and ``c`` (only the champion right)
    also holds the candidate's excess errors, which must not lower the power of the check that is to catch them.
    ``(2b + 1) / (n + 2)``: one pseudo-patient, so that no disagreement on a few patients is not read as never
    disagreeing. More candidate errors (larger ``c``) never change it, so the verdict is monotone in ``c``."""
    return min((2 * b + 1) / (n + 2), 1.0)


def discordance_range(b: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """The planning discordance at the bounds of its interval: ``2 x`` the Clopper-Pearson interval of the
    candidate's exclusive wins (``b`` of ``n``)."""
    lo, hi = clopper_pearson(b, n, level) or (0.0, 1.0)
    return 2 * lo, min(2 * hi, 1.0)


def patients_for_power(power_at, n_now: float, want: float = 0.8, n_max: float = 1e6) -> float | None:
    """The smallest n (to within ~5%) with ``power_at(n) >= want``, searching upwards from ``n_now``; None
    beyond ``n_max``."""
    n = max(2.0, float(n_now))
    if power_at(n) >= want:
        lo = 2.0
        hi = n
    else:
        lo = n
        while True:
            hi = lo * 1.5
            if hi > n_max:
                return None
            if power_at(hi) >= want:
                break
            lo = hi
    while hi - lo > max(1.0, 0.05 * lo):  # bisection; power is nearly monotone (the discreteness is small)
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if power_at(mid) >= want else (mid, hi)
    return math.ceil(hi)


def normal_power(n: float, n_now: float, se_now: float, margin: float, level: float = 0.95) -> float:
    """Power of a non-inferiority check whose estimate has standard error ``se_now`` at ``n_now`` patients
    (scaling as 1/sqrt(n)), when the truth is no difference: Φ(margin / se - z)."""
    from scipy.stats import norm

    if se_now <= 0:
        return 1.0
    se = se_now * math.sqrt(n_now / max(n, EPS))
    return float(norm.cdf(margin / se - z_value(level)))


def _r(x, nd: int = 4):
    return None if x is None or not np.isfinite(x) else round(float(x), nd)
