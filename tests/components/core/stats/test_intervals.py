"""Small-sample intervals and power: exact values, coverage at n = 8, 20, 50, no collapse at 0 or 1."""

import numpy as np
import pytest
from scipy.special import gammaln

from components.core.stats import intervals as I


def test_clopper_pearson_matches_the_exact_values_and_never_collapses():
    lo, hi = I.clopper_pearson(8, 8)
    assert lo == pytest.approx(0.6306, abs=1e-4) and hi == 1.0  # 8 of 8 COVID patients found
    assert I.clopper_pearson(0, 8) == (0.0, pytest.approx(0.3694, abs=1e-4))
    lo, hi = I.clopper_pearson(5, 10)
    assert lo == pytest.approx(0.1871, abs=1e-4) and hi == pytest.approx(0.8129, abs=1e-4)
    assert I.clopper_pearson(3, 0) is None


def test_proportion_counts_patients_not_images():
    # 8 patients with 3 images each, all found: the interval is that of 8/8, not of 24/24
    hits, groups = np.ones(24, bool), np.repeat(np.arange(8), 3)
    p = I.proportion(hits, groups)
    assert p["point"] == 1.0 and p["patients"] == 8 and p["images"] == 24
    assert p["low"] == pytest.approx(I.clopper_pearson(8, 8)[0], abs=1e-4) and p["high"] == 1.0
    # one patient with most of the images counts for less than several patients (Kish's effective count)
    assert I.kish_n([10, 1, 1]) == pytest.approx(144 / 102) and I.kish_n([2, 2, 2]) == 3


def _tango_coverage(n: int, p12: float, p21: float) -> float:
    b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    ok = b + c <= n
    b, c = b[ok], c[ok]
    rest = n - b - c
    logp = (gammaln(n + 1) - gammaln(b + 1) - gammaln(c + 1) - gammaln(rest + 1)
            + b * np.log(p12) + c * np.log(p21) + rest * np.log(1 - p12 - p21))
    lo, hi = I.tango_interval(b, c, np.full(len(b), float(n)), 0.95)
    return float(np.exp(logp)[(lo <= p12 - p21 + 1e-9) & (p12 - p21 - 1e-9 <= hi)].sum())


@pytest.mark.parametrize("n", [8, 20, 50])
def test_paired_interval_keeps_its_coverage_at_small_n(n):
    """Exact coverage (every table of discordant counts) of the nominal 95% paired interval: >= 0.93 (the full
    grid and the bootstrap it replaces: benchmarks/small_n.py)."""
    for p12, p21 in [(0.01, 0.01), (0.05, 0.05), (0.1, 0.02), (0.2, 0.1), (0.02, 0.15)]:
        assert _tango_coverage(n, p12, p21) >= 0.93, (n, p12, p21)


def test_paired_interval_does_not_collapse_when_the_models_agree():
    lo, hi = I.tango_interval(0, 0, 24)  # 24 patients, no discordant one: a bootstrap says [0, 0]
    assert lo == pytest.approx(-3.8415 / (24 + 3.8415), abs=1e-3) and hi == pytest.approx(-lo)
    lo, hi = I.tango_interval(5, 0, 20)
    assert 0 < lo < 0.25 < hi < 1  # 5 of 20 better, none worse: clearly above 0
    d = I.paired_difference([1, 1, 1, 0], [1, 0, 0, 0], ["a", "b", "c", "d"])
    assert d["difference"] == 0.5 and d["b"] == 2 and d["c"] == 0 and d["ci"][0] < 0.5 < d["ci"][1]


def test_auc_interval_stays_inside_and_narrows_with_patients():
    lo, hi = I.auc_interval(1.0, 8, 16)
    assert 0.7 < lo < 1.0 and hi == 1.0  # a perfect separation on 8 positives is not certainty
    lo0, _ = I.auc_interval(0.0, 8, 16)
    assert lo0 == 0.0
    small, large = I.auc_interval(0.9, 8, 8), I.auc_interval(0.9, 80, 80)
    assert small[0] < large[0] < 0.9 < large[1] < small[1]


def test_delong_correlation_and_mover():
    rng = np.random.default_rng(0)
    pos = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    a = pos * 1.0 + rng.normal(0, 1, 60)
    assert I.delong_correlation(pos, a, a) == pytest.approx(1.0)
    assert I.delong_correlation(pos, pos * 1.0, pos * 1.0) == 0.0  # perfect: no variance, the conservative 0
    same = I.mover(0.8, (0.7, 0.9), 0.8, (0.7, 0.9), 1.0)
    independent = I.mover(0.8, (0.7, 0.9), 0.8, (0.7, 0.9), 0.0)
    assert same == pytest.approx((0.0, 0.0), abs=1e-12) and independent[0] == pytest.approx(-0.1 * 2 ** 0.5)


def test_power_grows_with_patients_and_matches_the_normal_formula_for_many():
    psi, margin = 0.1, 0.05
    powers = [I.tango_power(n, psi, margin) for n in (20, 100, 400)]
    assert powers[0] < powers[1] < powers[2]
    need = I.patients_for_power(lambda n: I.tango_power(n, psi, margin), 20)
    analytic = psi * (1.959964 + 0.841621) ** 2 / margin ** 2  # Connor's formula for equal models
    assert need == pytest.approx(analytic, rel=0.15)
    assert I.tango_power(need, psi, margin) >= 0.8 - 0.02
    # no disagreement observed on a few patients is not read as never disagreeing; only the candidate's
    # exclusive wins count (its excess errors would lower the power of the check meant to catch them)
    assert I.planning_discordance(0, 24) == pytest.approx(1 / 26)
    assert I.planning_discordance(3, 24) == pytest.approx(7 / 26)
    lo, hi = I.discordance_range(0, 24)
    assert lo == 0 and hi == pytest.approx(2 * I.clopper_pearson(0, 24)[1])


def test_newcombe_variance_uses_n_star_minus_one_as_published():
    """Newcombe (2006, Part 2, methods 4-5): Hanley and McNeil's variance with m - 1 and n - 1 both replaced by
    N* - 1, N* = (m + n)/2. With m = n it is Hanley and McNeil's (1982) variance itself (Q1 = θ/(2-θ),
    Q2 = 2θ²/(1+θ)); auRoc's getVARmw (the method's R implementation) writes the same multiplier (m + n)/2 - 1."""
    theta, m, n = 0.8, 10, 10
    q1, q2 = theta / (2 - theta), 2 * theta ** 2 / (1 + theta)
    hanley_mcneil = (theta * (1 - theta) + (m - 1) * (q1 - theta ** 2) + (n - 1) * (q2 - theta ** 2)) / (m * n)
    assert float(I._hm_variance(theta, m, n)) == pytest.approx(hanley_mcneil, rel=1e-12)
    assert hanley_mcneil == pytest.approx(0.0104, abs=1e-9)  # by hand: (0.16 + 9 x 0.02667 + 9 x 0.07111) / 100
    # m != n: the symmetrised multiplier, (8 + 16)/2 - 1 = 11, not 10
    theta, m, n = 0.9, 8, 16
    bracket = 1 + 11 * ((1 - theta) / (2 - theta) + theta / (1 + theta))
    assert float(I._hm_variance(theta, m, n)) == pytest.approx(theta * (1 - theta) / (m * n) * bracket, rel=1e-12)
