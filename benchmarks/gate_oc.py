"""The gate's operating characteristic: how often it passes, is inconclusive or fails, against the truth.

Simulated champion/candidate pairs run through the real gate code (``components.core.stats.decision``: the
absolute thresholds on the candidate's served decision, the training check, every paired non-inferiority check,
one verdict), with params.yaml's ``gate`` and ``evaluate`` sections:

* 3 classes in equal shares (the split is stratified), 1-3 images per patient;
* each model's logits: ``mu * onehot(label) + h_patient + g_model,patient + e_model,image`` (Gaussian): ``h``,
  shared by both models and all of a patient's images, makes the two models' scores correlated (hard patients
  are hard for both), ``g`` makes a patient's images agree, ``e`` is per image; softmax gives the probabilities;
* the candidate is the champion's equal (the same distribution) and then, for a true difference ``d`` in
  accuracy points: worse, a share ``|d| / acc`` of its patients pushed to be wrong on every image (their true
  class's logit lowered by 6); better, a share ``d / (1 - acc)`` pushed to be right. The expected image accuracy
  moves by exactly ``d``;
* each model's operating points are chosen on its own validation split of as many patients
  (``evaluate.target_sensitivity``, the conformal rank), as the pipeline does.

Per cell (true difference x test patients), the share of gates that passed (``decision == "passed"``: every check
passed), were inconclusive or failed. The last line states the goals' numbers with their Monte-Carlo error (a
binomial standard error; for a share of 0, the one-sided 95% bound 3/sims).

    python -m benchmarks.gate_oc --sims-other 300  # 1000 pairs in the goal cells, 300 elsewhere
    python -m benchmarks.gate_oc --sims 20 --ns 24 --diffs -0.05 0  --png /tmp/oc.png    # a smoke run
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, table

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]
MU, SD_SHARED, SD_MODEL, SD_IMAGE, PUSH = 2.6, 1.0, 0.6, 0.6, 6.0
DEFAULT_DIFFS = [-0.10, -0.05, -0.02, 0.0, 0.02]


def _params():
    from components.core.contract.params.schema import load_params

    return load_params(ROOT / "params.yaml")


def cohort(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels per image, patient ids per image, patient index per image): ``n`` patients, classes in equal
    shares (a stratified split), 1-3 images each."""
    labels = np.resize(np.arange(len(CLASSES)), n)
    sizes = rng.integers(1, 4, n)
    who = np.repeat(np.arange(n), sizes)
    return labels[who], who.astype(str), who


def logits(y: np.ndarray, who: np.ndarray, shared: np.ndarray, rng) -> np.ndarray:
    """One model's logits on the images ``y`` of the patients ``who`` (``shared``: the patients' effects both
    models see)."""
    k = len(CLASSES)
    own = rng.normal(0, SD_MODEL, (int(who.max()) + 1, k))
    return MU * np.eye(k)[y] + shared[who] + own[who] + rng.normal(0, SD_IMAGE, (len(y), k))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def push(z: np.ndarray, y: np.ndarray, who: np.ndarray, share: float, rng) -> np.ndarray:
    """``share`` of the patients made wrong (share < 0) or right (share > 0) on every image."""
    n = int(who.max()) + 1
    hit = (rng.random(n) < abs(share))[who]
    z = z.copy()
    z[np.flatnonzero(hit), y[hit]] += PUSH if share > 0 else -PUSH
    return z


def base_accuracy(rng, n: int = 200_000) -> float:
    """The expected image accuracy of one model (before any push), by simulation."""
    y, _, who = cohort(n, rng)
    z = logits(y, who, rng.normal(0, SD_SHARED, (n, len(CLASSES))), rng)
    return float((z.argmax(axis=1) == y).mean())


def one_pair(n: int, diff: float, acc: float, seed: int, gate, evaluate) -> tuple[str, list, bool]:
    """Simulate a champion and a candidate (true accuracy difference ``diff``) on ``n`` test patients and as many
    validation patients, and run the gate: (decision, the checks that failed outright, whether the gate's
    ``passed`` lets register run: an inconclusive decision does under ``gate.on_underpowered: thresholds_only``)."""
    from components.core.stats import clinical, decision

    rng = np.random.default_rng(seed)
    share = 0.0 if diff == 0 else (diff / (1 - acc) if diff > 0 else diff / acc)
    probs, thresholds = {}, {}
    for split in ("val", "test"):
        y, patients, who = cohort(n, rng)
        shared = rng.normal(0, SD_SHARED, (n, len(CLASSES)))
        champ = softmax(logits(y, who, shared, rng))
        cand = softmax(push(logits(y, who, shared, rng), y, who, share, rng))
        probs[split] = (y, patients, cand, champ)
    y, patients, cand, champ = probs["val"]
    for name, p in (("cand", cand), ("champ", champ)):
        chosen = clinical.choose_thresholds(y, p, CLASSES, dict(evaluate.target_sensitivity), patients,
                                            evaluate.bootstrap.level)
        thresholds[name] = {c: float(v["threshold"]) for c, v in chosen.items()}
    y, patients, cand, champ = probs["test"]
    _, checks = decision.candidate_checks(y, cand, patients, CLASSES, thresholds["cand"], gate,
                                          evaluate.bootstrap.level)
    compared = sorted(set(thresholds["cand"]) | set(thresholds["champ"]))
    nis, _ = decision.champion_checks(y, cand, champ, patients, CLASSES, compared, gate, evaluate.bootstrap.level,
                                      evaluate.bootstrap.resamples, seed, plan=False)
    checks += nis
    outcome = decision.verdict(checks)
    failed = [c for c in checks if not c["passed"] and c.get("status") != "inconclusive"]
    return outcome["decision"], [(c["metric"], c["kind"]) for c in failed], bool(outcome["passed"])


def run_cell(n: int, diff: float, acc: float, seeds: list[int]) -> list[tuple[str, list, bool]]:
    p = _params()
    return [one_pair(n, diff, acc, s, p.gate, p.evaluate) for s in seeds]


def mc_error(p: float, sims: int) -> float:
    """Binomial standard error; for p = 0 the one-sided 95% upper bound 3/sims (the rule of three)."""
    return 3 / sims if p == 0 else math.sqrt(p * (1 - p) / sims)


def plot(results: dict, ns: list[int], diffs: list[float], margin: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = [100 * d for d in diffs]
    for n in ns:
        ax.plot(x, [results[(n, d)]["passed"] for d in diffs], marker="o", label=f"{n} test patients")
    ax.axvline(-100 * margin, color="grey", ls="--", lw=1)
    ax.text(-100 * margin, 1.02, " −margin", color="grey", va="bottom", fontsize=8)
    ax.set_xlabel("true accuracy difference, candidate − champion (points)")
    ax.set_ylabel("P(gate passes)")
    ax.set_ylim(-0.02, 1.08)
    ax.set_title("The gate's operating characteristic (simulated, params.yaml)")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", type=int, nargs="+", default=[24, 100, 800], help="test patients")
    ap.add_argument("--diffs", type=float, nargs="+", default=DEFAULT_DIFFS, help="true accuracy differences")
    ap.add_argument("--sims", type=int, default=1000,
                    help="simulated pairs per cell that sets a goal (true difference -margin or 0)")
    ap.add_argument("--sims-other", type=int, default=None,
                    help="simulated pairs in the other cells (default: --sims)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "images" / "gate_oc.png")
    args = ap.parse_args(argv)
    params = _params()
    margin = params.gate.margin("accuracy")
    acc = base_accuracy(np.random.default_rng(args.seed + 99))
    print(f"one model's expected image accuracy {acc:.3f}; params.yaml gate: margins "
          f"{params.gate.non_inferiority_margin}, min_power {params.gate.min_power}, "
          f"bootstrap resamples {params.evaluate.bootstrap.resamples}; {args.sims} pairs per goal cell, "
          f"{args.sims_other or args.sims} per other cell\n")
    started = time.time()
    cells = [(n, d) for d in args.diffs for n in args.ns]

    def sims(d: float) -> int:
        goal = d == 0 or abs(d + margin) < 1e-12
        return args.sims if goal or args.sims_other is None else args.sims_other

    seeds = {(n, d): [args.seed * 1_000_003 + i * 100_000 + s for s in range(sims(d))]
             for i, (n, d) in enumerate(cells)}
    if args.workers > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            jobs = {key: pool.submit(run_cell, *key, acc, seeds[key]) for key in cells}
            done = {key: job.result() for key, job in jobs.items()}
    else:
        done = {key: run_cell(*key, acc, seeds[key]) for key in cells}
    results = {}
    for key, outcomes in done.items():
        count = {k: sum(o[0] == k for o in outcomes) / len(outcomes) for k in ("passed", "inconclusive", "failed")}
        count["registered"] = sum(o[2] for o in outcomes) / len(outcomes)
        failing: dict[str, int] = {}
        for _, failed, _ in outcomes:
            for m, _kind in failed:
                failing[m] = failing.get(m, 0) + 1
        # failed on the comparison with the champion (a non-inferiority check), whatever the other checks did
        versus = sum(any(kind == "non_inferiority" for _, kind in failed) for _, failed, _ in outcomes) / len(outcomes)
        results[key] = {**count, "failed_comparison": versus, "failing": failing}
    rows = []
    for n, d in cells:
        r = results[(n, d)]
        top = ", ".join(f"{m} {c / sims(d):.3f}" for m, c in sorted(r["failing"].items(), key=lambda t: -t[1])[:3])
        rows.append([f"{100 * d:+.0f}", n, sims(d), f"{r['passed']:.3f}", f"{r['inconclusive']:.3f}",
                     f"{r['failed']:.3f}", f"{r['failed_comparison']:.3f}", f"{r['registered']:.3f}", top or "—"])
    policy = _params().gate.on_underpowered
    print(table(["true difference (points)", "test patients", "pairs", "P(pass)", "P(inconclusive)", "P(fail)",
                 "of which against the champion", f"P(registered) under on_underpowered: {policy}",
                 "checks that failed (share of pairs)"], rows))
    plot(results, args.ns, args.diffs, margin, args.png)
    print(f"\nP(pass) against the true difference: {args.png}")
    print("joint power (P(pass) of two equal models, all checks together): "
          + ", ".join(f"{n} patients {results[(n, 0.0)]['passed']:.3f}" for n in args.ns if (n, 0.0) in results))
    print(f"{time.time() - started:.0f} s\n")
    worse = [(results[(n, d)]["passed"], n, d) for n, d in cells if d <= -margin + 1e-12]
    equal = [(results[(n, d)]["failed"], n, d) for n, d in cells if d == 0]
    x = max(worse) if worse else (float("nan"), None, None)
    y = max(equal) if equal else (float("nan"), None, None)
    x_err = mc_error(x[0], sims(x[2])) if worse else float("nan")
    y_err = mc_error(y[0], args.sims) if equal else float("nan")
    line = (f"gate-oc: max P(pass | worse by >= margin) = {x[0]:.3f} ± {x_err:.3f}; "
            f"max P(fail | equal) = {y[0]:.3f} ± {y_err:.3f} (Monte-Carlo error; worst cells: "
            f"{x[1]} patients at {100 * (x[2] or 0):+.0f} points, {y[1]} patients at 0)")
    versus = max((results[(n, d)]["failed_comparison"], n) for n, d in cells if d == 0) if equal else (float("nan"),)
    print(f"the comparison with the champion alone (a non-inferiority check failed): max P(fail | equal) = "
          f"{versus[0]:.3f} ± {mc_error(versus[0], args.sims):.3f}; the rest of P(fail | equal) is the absolute "
          "thresholds on the candidate's own served decision")
    registered = max((results[(n, d)]["registered"], n, d) for n, d in cells if d <= -margin + 1e-12) if worse \
        else (float("nan"), None, None)
    print(f"under params.yaml's gate.on_underpowered: {policy}, an inconclusive gate registers: max P(registered | "
          f"worse by >= margin) = {registered[0]:.3f} ({registered[1]} patients at {100 * (registered[2] or 0):+.0f} "
          "points); with on_underpowered: fail it is P(pass) above")
    print(line)
    return {"results": results, "x": x[0], "y": y[0], "line": line, "registered_worse": registered[0]}


if __name__ == "__main__":
    main()
