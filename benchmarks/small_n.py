"""Small-sample intervals, operating points and power (components/core/stats/intervals.py, issue 22).

Prints, for nominal 95% intervals at n = 8, 20, 50 patients:

(a) one proportion (sensitivity of n positive patients): coverage of Clopper-Pearson against the patient
    percentile bootstrap it replaces — exact, by summing over every outcome k = 0..n;
(b) the paired difference of two proportions (candidate - champion on the same patients): coverage of Tango's
    score interval, exact over every table of discordant counts, against the paired percentile bootstrap
    (Monte Carlo), on a grid of discordance and difference;
(c) the same with 1-3 images per patient that tend to agree (Monte Carlo; the counts divided by the patients'
    design effect, intervals.paired_design_effect);
(d) ROC-AUC: Newcombe's score interval against the percentile bootstrap, binormal scores (Monte Carlo);
(e) operating points: the expected out-of-sample sensitivity of a threshold chosen on n positive validation
    patients, the old rank ceil(target * n) against the conformal rank ceil(target * (n + 1)) (exact: the
    sensitivity of the k-th highest of n scores is Beta(k, n - k + 1));
(f) patients needed for 80% power of a paired non-inferiority check;
(g) ECE of a calibrated model: the percentile bootstrap interval the reports used to give (how often it covers
    the true ECE, 0) against the calibrated reference they give now (how often a calibrated model's ECE is
    flagged above it).

    python -m benchmarks.small_n            # the full tables (about a minute on 2 cores)
    python -m benchmarks.small_n --quick    # fewer simulations
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.special import gammaln
from scipy.stats import beta, binom

from benchmarks.common import table
from components.core.stats import intervals as I

LEVEL = 0.95


# ---------------------------------------------------------------- (a) one proportion
def proportion_coverage(n: int, p: float) -> tuple[float, float]:
    """Exact coverage of Clopper-Pearson and of the percentile bootstrap (infinite resamples), k ~ Bin(n, p)."""
    k = np.arange(n + 1)
    w = binom.pmf(k, n, p)
    cp = np.array([I.clopper_pearson(x, n, LEVEL) for x in k])
    boot_lo = binom.ppf((1 - LEVEL) / 2, n, k / n) / n
    boot_hi = binom.ppf((1 + LEVEL) / 2, n, k / n) / n
    return (float(w[(cp[:, 0] <= p) & (p <= cp[:, 1])].sum()),
            float(w[(boot_lo <= p) & (p <= boot_hi)].sum()))


# ---------------------------------------------------------------- (b) paired difference
def tango_coverage(n: int, p12: float, p21: float) -> float:
    """Exact coverage of Tango's interval over every (b, c) with b + c <= n (trinomial)."""
    b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    ok = b + c <= n
    b, c = b[ok], c[ok]
    rest = n - b - c
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = (gammaln(n + 1) - gammaln(b + 1) - gammaln(c + 1) - gammaln(rest + 1)
                + np.where(b > 0, b * np.log(max(p12, 1e-300)), 0) + np.where(c > 0, c * np.log(max(p21, 1e-300)), 0)
                + np.where(rest > 0, rest * np.log(max(1 - p12 - p21, 1e-300)), 0))
    w = np.exp(logp)
    lo, hi = I.tango_interval(b, c, np.full(len(b), float(n)), LEVEL)
    d = p12 - p21
    return float(w[(lo <= d + 1e-9) & (d - 1e-9 <= hi)].sum())


def paired_bootstrap_coverage(n: int, p12: float, p21: float, sims: int, resamples: int, rng) -> float:
    """Monte Carlo coverage of the paired percentile bootstrap of (b - c) / n."""
    probs = [p12, p21, 1 - p12 - p21]
    tables = rng.multinomial(n, probs, size=sims)
    hits = 0
    for t in tables:
        boot = rng.multinomial(n, t / n, size=resamples)
        diff = (boot[:, 0] - boot[:, 1]) / n
        lo, hi = np.percentile(diff, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])
        hits += lo - 1e-9 <= p12 - p21 <= hi + 1e-9
    return hits / sims


PAIRED_GRID = [(psi, share) for psi in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5) for share in (0.0, 0.25, 0.5, 0.75, 1.0)]


# ---------------------------------------------------------------- (c) clustered
def clustered_coverage(n_patients: int, p12: float, p21: float, agree: float, sims: int, rng) -> float:
    """Tango on Kish-scaled counts with 1-3 images per patient; each image copies its patient's outcome with
    probability ``agree`` and draws its own otherwise (so the image-level rates stay p12, p21)."""
    hits = 0
    d = p12 - p21
    cats = np.array([0, 1, 2])  # 0: only the first right, 1: only the second, 2: concordant
    probs = [p12, p21, 1 - p12 - p21]
    for _ in range(sims):
        sizes = rng.integers(1, 4, n_patients)
        groups = np.repeat(np.arange(n_patients), sizes)
        own = rng.choice(cats, size=n_patients, p=probs)[groups]
        fresh = rng.choice(cats, size=len(groups), p=probs)
        outcome = np.where(rng.random(len(groups)) < agree, own, fresh)
        counts = I.paired_counts(outcome == 0, outcome == 1, groups)
        lo, hi = I.tango_interval(counts["b"], counts["c"], counts["n"], LEVEL)
        hits += float(lo) - 1e-9 <= d <= float(hi) + 1e-9
    return hits / sims


# ---------------------------------------------------------------- (d) AUC
def auc_coverage(n: int, true_auc: float, sims: int, resamples: int, rng) -> tuple[float, float, float]:
    """Coverage of Newcombe's interval and of the percentile bootstrap, binormal scores with equal variances;
    and the share of bootstrap intervals that collapse to a point."""
    from scipy.stats import norm

    from components.core.stats.clinical import auc

    shift = math.sqrt(2) * norm.ppf(true_auc)
    pos = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    new = boot = collapsed = 0
    for _ in range(sims):
        s = np.r_[rng.normal(shift, 1, n), rng.normal(0, 1, n)]
        a = auc(pos, s)
        lo, hi = I.auc_interval(a, n, n, LEVEL)
        new += lo <= true_auc <= hi
        reps = []
        for _ in range(resamples):
            ip, ineg = rng.integers(0, n, n), n + rng.integers(0, n, n)
            idx = np.r_[ip, ineg]
            reps.append(auc(pos[idx], s[idx]))
        blo, bhi = np.percentile(reps, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])
        boot += blo <= true_auc <= bhi
        collapsed += bhi - blo < 1e-9
    return new / sims, boot / sims, collapsed / sims


# ---------------------------------------------------------------- (e) operating points
def operating_point_row(n: int, target: float) -> list:
    """Expected out-of-sample sensitivity (and its 5% quantile over validation draws) for both ranks."""
    old_k = max(1, math.ceil(target * n))
    new_k = math.ceil(target * (n + 1))
    old = (old_k / (n + 1), beta.ppf(0.05, old_k, n - old_k + 1))
    new = (new_k / (n + 1), beta.ppf(0.05, new_k, n - new_k + 1)) if new_k <= n else None
    return [n, target, f"{old[0]:.3f}", f"{old[1]:.3f}",
            f"{new[0]:.3f}" if new else "refused", f"{new[1]:.3f}" if new else "—",
            "yes" if old[0] >= target else "no", "yes" if new is None or new[0] >= target else "no"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", type=int, nargs="+", default=[8, 20, 50])
    ap.add_argument("--sims", type=int, default=400, help="Monte Carlo data sets per setting")
    ap.add_argument("--resamples", type=int, default=400, help="bootstrap resamples per data set")
    ap.add_argument("--quick", action="store_true", help="a few settings and simulations (smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    sims, resamples = (30, 60) if args.quick else (args.sims, args.resamples)
    grid = PAIRED_GRID[::7] if args.quick else PAIRED_GRID

    print("## (a) one proportion, exact coverage (nominal 0.95): Clopper-Pearson vs patient percentile bootstrap\n")
    rows = []
    for n in args.ns:
        for p in (0.5, 0.8, 0.9, 0.95, 0.99):
            cp, bt = proportion_coverage(n, p)
            rows.append([n, p, f"{cp:.3f}", f"{bt:.3f}", f"{cp / bt:.2f}"])
    print(table(["patients", "true p", "Clopper-Pearson", "bootstrap", "ratio"], rows))
    print(f"\nAt k = n the bootstrap interval is [1, 1]; Clopper-Pearson for 8/8 is "
          f"[{I.clopper_pearson(8, 8)[0]:.3f}, 1].\n")

    print("## (b) paired difference (candidate - champion), coverage over a grid of discordance x direction "
          f"({len(grid)} settings): Tango exact, paired percentile bootstrap Monte Carlo ({sims} x {resamples})\n")
    rows = []
    for n in args.ns:
        tango = [tango_coverage(n, psi * share, psi * (1 - share)) for psi, share in grid]
        boot = [paired_bootstrap_coverage(n, psi * share, psi * (1 - share), sims, resamples, rng)
                for psi, share in grid]
        worst = grid[int(np.argmin(tango))]
        rows.append([n, f"{min(tango):.3f}", f"{np.mean(tango):.3f}", f"psi={worst[0]}, share b={worst[1]}",
                     f"{min(boot):.3f}", f"{np.mean(boot):.3f}", f"{min(tango) / max(min(boot), 1e-9):.2f}"])
    print(table(["patients", "Tango min", "Tango mean", "Tango worst at", "bootstrap min", "bootstrap mean",
                 "min ratio"], rows))
    print("\nThe bootstrap's worst cases are the small discordances (psi <= 0.05): with no discordant patient "
          "its interval is [0, 0].\n")

    print(f"## (c) paired difference with 1-3 images per patient (Monte Carlo, {sims} per setting): Tango on "
          "the counts divided by the patients' design effect\n")
    rows = []
    for n in args.ns:
        for agree in (0.0, 0.5, 0.9):
            cov = [clustered_coverage(n, psi * share, psi * (1 - share), agree, sims, rng)
                   for psi, share in ([(0.05, 0.5), (0.2, 0.5), (0.2, 0.75)] if not args.quick else [(0.2, 0.5)])]
            rows.append([n, agree, f"{min(cov):.3f}", f"{np.mean(cov):.3f}"])
    print(table(["patients", "image agrees with its patient", "coverage min", "coverage mean"], rows))
    print()

    a_sims, a_res = max(10, sims // 4), max(20, resamples // 4)  # every resample ranks 2n scores: fewer
    print(f"## (d) ROC-AUC, n positive and n negative patients, binormal (Monte Carlo, {a_sims} x {a_res})\n")
    rows = []
    for n in args.ns:
        for a in ((0.8, 0.95) if args.quick else (0.8, 0.9, 0.97, 0.99)):
            new, boot, collapsed = auc_coverage(n, a, a_sims, a_res, rng)
            rows.append([n, a, f"{new:.3f}", f"{boot:.3f}", f"{collapsed:.2f}"])
    print(table(["patients per class", "true AUC", "Newcombe score", "bootstrap", "bootstrap collapsed to a point"],
                rows))
    print()

    print("## (e) operating points: expected out-of-sample sensitivity of the val-chosen threshold (exact)\n")
    rows = [operating_point_row(n, t) for t in (0.9, 0.95) for n in (5, 10, 20, 50)]
    print(table(["val positive patients", "target", "old ceil(t*n): expected", "old: 5% quantile",
                 "conformal ceil(t*(n+1)): expected", "conformal: 5% quantile", "old meets target",
                 "conformal meets target"], rows))
    print("\nRefused: fewer positive patients than target/(1 - target); the step says how many are needed.\n")

    print("## (f) patients (new to both models) for 80% power of a paired non-inferiority check (Tango, "
          "two equal models)\n")
    rows = []
    for margin in (0.02, 0.05, 0.1):
        row: list = [margin]
        for psi in (0.0, 0.05, 0.1, 0.2):
            need = I.patients_for_power(lambda n, psi=psi, margin=margin: I.tango_power(n, psi, margin, LEVEL), 8)
            row.append(need if need is not None else "> 1e6")
        rows.append(row)
    print(table(["margin", "discordance 0", "0.05", "0.1", "0.2"], rows))

    e_sims, e_res = (30, 100) if args.quick else (300, 400)
    print(f"\n## (g) ECE of a calibrated model (true ECE 0; {e_sims} data sets, {e_res} resamples / reference "
          "draws)\n")
    print(table(["images", "data sets", "old percentile bootstrap: covers 0", "calibrated reference: flagged "
                 "(nominal 0.05)"], [ece_rows(n, e_sims, e_res, rng) for n in (49, 200)]))


def ece_rows(images: int, sims: int, resamples: int, rng) -> list:
    """A calibrated model (correct with probability its confidence) on ``images`` images, one per patient: the
    share of percentile-bootstrap intervals that contain its true ECE (0), and the share of sets whose ECE is
    above the calibrated reference's 95% quantile (what the reports give now)."""
    from components.core.stats.clinical import calibrated_ece_reference
    from components.core.stats.metrics import expected_calibration_error

    covered = flagged = 0
    for _ in range(sims):
        conf = rng.uniform(0.4, 1.0, images)
        proba = np.c_[conf, 1 - conf]
        y = np.where(rng.random(images) < conf, 0, 1)
        boot = [expected_calibration_error(y[idx], proba[idx]) for idx in
                (rng.integers(0, images, images) for _ in range(resamples))]
        lo, _ = np.percentile(boot, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])
        covered += lo <= 0
        ref = calibrated_ece_reference(proba, 10, resamples, seed=int(rng.integers(1 << 30)))
        flagged += expected_calibration_error(y, proba) > ref["high"]
    return [images, sims, f"{covered / sims:.3f}", f"{flagged / sims:.3f}"]


if __name__ == "__main__":
    main()
