"""The label review measured as a person gets it: the whole suspect list it hands over, and its top 10, 25 and 50
(the review budgets a person would pick), on planted label noise of demo sets that did not choose the review's
recipe, under two noise models; its time against one training; optionally the retraining after a person's check.

    python -m benchmarks.label_review --noise 0.1 --demo-seeds 1 2 --noise-models uniform similar

1. Per demo seed (``data.demo.seed``: the films *and* which patients are flipped; the fold recipe — 30 epochs, no
   augmentation — was chosen on seed 0, BENCHMARKS.md §15, so 0 is not measured here) and noise model
   (``data.demo.label_noise_model``: ``uniform`` gives a flipped patient any other class, ``similar`` flips only
   PNEUMONIA <-> COVID19, the confusable pair): the shipped demo (params.yaml) with ``data.demo.label_noise``;
   ingest → validate → split → preprocess → one training (``--seeds``: its seconds are the yardstick) →
   ``cxr review-labels`` (the default review params).
2. The list: precision and recall of every suspect cleanlab returns (what ``cxr review-labels serve`` puts in front
   of a person), and precision / recall of its top 10, 25, 50 (fewer when the list is shorter: said so); how often
   the suggested class is the film's true one. Recall counts the planted films the review could see (train + val).
3. ``--sample PATH`` instead: real films (``../shared/data/cxr-sample``: no planted truth, each class from another
   hospital): the same steps, and the top ``--top`` suspects printed for a person to look at.
4. ``--retrain``: ``--accept`` every suspect as proposals; the "person" is the generator's truth (a proposal on a
   planted film is confirmed to the film's true class, one on a correct label rejected); ingest applies the confirmed
   lines → … → training again (same seeds); both runs scored on a fresh clean demo set and on their test split's
   true labels.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import ROOT, machine, table


def clean_set(classes: list[str], size: int, seed: int = 1234, patients: int = 40):
    """A fresh demo set, no noise, other patients (demo seed 1234): (x, y) as the model takes them (crop resize)."""
    from components.core.data import synthetic
    from components.core.data.images import load_for_model

    xs, ys = [], []
    for _, label, _, data in synthetic.generate(classes, patients, 2, 160, 320, seed):
        xs.append(load_for_model(data, size, mode="crop"))
        ys.append(classes.index(label))
    return np.stack(xs)[..., None], np.array(ys)


def accuracy(model_dir: Path, x: np.ndarray, y: np.ndarray) -> float:
    from components.core.model import models

    model = models.load_model(model_dir / "model.keras")
    return float((model.predict(x, verbose=0).argmax(axis=1) == y).mean())


def true_labels(params) -> dict[str, str]:
    """patient → the class its films show."""
    from components.core.data import synthetic

    d = params.data.demo
    flips = synthetic.planted_flips(list(params.data.classes), d.patients_per_class, d.label_noise, d.seed,
                                    d.label_noise_model)
    return {p: t for p, (t, _) in flips.items()}


def data_steps(params, work: Path, overrides_file: Path | None) -> dict:
    from components import ingest, preprocess, split, validate

    t = time.perf_counter()
    ingest_summary = ingest.run(params, work / "raw", work / "reports" / "ingest", label_overrides=overrides_file)
    validate.run(params, work / "raw", work / "validated", work / "reports" / "validation")
    split.run(params, work / "validated" / "manifest.csv", work / "splits", work / "reports" / "split")
    preprocess.run(params, work / "splits", work / "raw", work / "shards")
    return {"seconds": time.perf_counter() - t, "ingest": ingest_summary}


def train_and_score(params, work: Path, seeds: list[int], clean, truth: dict[str, str]) -> list[dict]:
    from components import train
    from components.core.contract.params.schema import apply_overrides, parse_params
    from components.core.data import shards as shard_io
    from components.core.model import models

    out = []
    test = shard_io.load_split(work / "shards", "test")
    classes = list(params.data.classes)
    y_true = np.array([classes.index(truth.get(p, lab)) for p, lab in zip(test.rows["patient_id"], test.rows["label"],
                                                                         strict=True)])
    for seed in seeds:
        p = parse_params(apply_overrides(params.model_dump(mode="json", by_alias=True, exclude_none=True),
                                         {"train.seed": seed}))
        t = time.perf_counter()
        summary = train.run(p, work / "shards", work / f"models-{seed}", work / f"state-{seed}", track=False)
        seconds = time.perf_counter() - t
        model = models.load_model(work / f"models-{seed}" / "model.keras")
        test_acc = float((model.predict(np.asarray(test.x), verbose=0).argmax(axis=1) == y_true).mean())
        out.append({"seed": seed, "train_seconds": round(seconds, 1), "epochs": summary["epochs_run"],
                    "clean_set_accuracy": round(accuracy(work / f"models-{seed}", *clean), 4) if clean else None,
                    "test_split_true_label_accuracy": round(test_acc, 4), "test_images": len(y_true)})
        logging.info("seed %d: %s", seed, out[-1])
    return out


def confirm_as_a_person(overrides_file: Path, truth: dict[str, str], raw_manifest: Path) -> dict:
    """Confirm the proposals whose image was planted (to the film's true class), drop the others."""
    from components.core.data import manifest, overrides

    lines = overrides.read(overrides_file)
    rows = manifest.read(raw_manifest).set_index("path")
    keep, counts = [], {"confirmed_as_suggested": 0, "confirmed_other_class": 0, "rejected_label_was_right": 0}
    for line in lines.itertuples(index=False):
        true = truth.get(rows.loc[line.path, "patient_id"])
        if true is None:  # the given label was right: the person rejects the proposal
            counts["rejected_label_was_right"] += 1
            continue
        counts["confirmed_as_suggested" if true == line.label else "confirmed_other_class"] += 1
        keep.append({**line._asdict(), "label": true, "status": "confirmed", "who": "benchmark (generator truth)"})
    pd.DataFrame(keep, columns=overrides.COLUMNS).to_csv(overrides_file, index=False)
    return counts


BUDGETS = (10, 25, 50)


def list_quality(suspects: pd.DataFrame, planted: set[str], reviewed: set[str], truth_of: dict[str, str]) -> dict:
    """Precision and recall of the whole list and of its top k (k in :data:`BUDGETS`), and how often the suggestion
    is the film's true class (``truth_of``: path → true class, planted films only)."""
    seen = planted & reviewed
    paths = list(suspects["path"])
    hits = [p in seen for p in paths]
    out = {"planted_reviewed": len(seen), "suspects": len(paths), "hits": sum(hits),
           "precision": round(sum(hits) / len(paths), 3) if paths else None,
           "recall": round(sum(hits) / len(seen), 3) if seen else None}
    for k in BUDGETS:
        n = min(k, len(paths))
        out[f"top{k}"] = {"looked_at": n, "hits": sum(hits[:n]),
                          "precision": round(sum(hits[:n]) / n, 3) if n else None,
                          "recall": round(sum(hits[:n]) / len(seen), 3) if seen else None}
    found = suspects[[p in seen for p in paths]]
    right = sum(truth_of[r.path] == r.suggested_label for r in found.itertuples())
    out["suggestion_is_true_class"] = f"{right}/{len(found)}"
    return out


def one_case(base: dict, noise: float, model: str, demo_seed: int, seeds: list[int], retrain: bool, work: Path,
             smoke_patients: int | None) -> dict:
    from components import review_labels
    from components.core.contract.params.schema import apply_overrides, parse_params
    from components.core.data import manifest
    from components.core.data.sources.demo import PLANTED

    params = parse_params(apply_overrides(base, {"data.demo.label_noise": noise, "data.demo.label_noise_model": model,
                                                 "data.demo.seed": demo_seed}))
    truth = true_labels(params)
    run1, run2 = work / "run1", work / "run2"
    prep1 = data_steps(params, run1, None)
    clean = clean_set(list(params.data.classes), params.train.image_size, patients=smoke_patients or 40) \
        if retrain else None
    first = train_and_score(params, run1, seeds, clean, truth)
    t = time.perf_counter()
    review = review_labels.run(params, run1 / "shards", run1 / "review")
    review_seconds = time.perf_counter() - t
    raw = manifest.read(run1 / "raw" / "manifest.csv")
    planted_rows = raw[raw[PLANTED].astype(str) == "True"]
    planted = set(planted_rows["path"])
    truth_of = {r.path: truth[r.patient_id] for r in planted_rows.itertuples()}
    reviewed = set(pd.read_csv(run1 / "review" / "pred_probs.csv")["path"])
    suspects = pd.read_csv(run1 / "review" / "suspects.csv")
    quality = list_quality(suspects, planted, reviewed, truth_of)
    mean_train = statistics.mean(r["train_seconds"] for r in first)
    case = {"noise_model": model, "demo_seed": demo_seed, "noise": noise, "images": len(raw),
            "planted_images": len(planted), "list": quality,
            "review": {"seconds": round(review_seconds, 1), "folds": review["folds"], "epochs": review["epochs"],
                       "image_size": review["image_size"], "out_of_fold_agreement": review["out_of_fold_agreement"],
                       "images_trained": review["images_trained"]},
            "one_training_seconds": round(mean_train, 1),
            "review_to_one_training": round(review_seconds / mean_train, 2),
            "run1": first, "data_steps_seconds": [round(prep1["seconds"], 1)]}
    if retrain:
        decisions = work / "label_overrides.csv"
        decisions.write_text(",".join(_overrides_columns()) + "\n")
        review_labels.run(params, run1 / "shards", run1 / "review", accept=len(suspects), label_overrides=decisions)
        case["person"] = confirm_as_a_person(decisions, truth, run1 / "raw" / "manifest.csv")
        prep2 = data_steps(params, run2, decisions)
        case["applied"] = prep2["ingest"].get("label_overrides")
        case["run2"] = train_and_score(params, run2, seeds, clean, truth)
        case["data_steps_seconds"].append(round(prep2["seconds"], 1))
    logging.info("case %s seed %d: %s", model, demo_seed, quality)
    return case


def real_case(base: dict, sample: Path, seeds: list[int], work: Path, top: int) -> dict:
    """The review on real films: the suspects (nothing planted, so no precision), the time against one training."""
    from components import review_labels
    from components.core.contract.params.schema import apply_overrides, parse_params

    params = parse_params(apply_overrides(base, {"data.source": "dir", "data.path": str(sample)}))
    prep = data_steps(params, work, None)
    first = train_and_score(params, work, seeds, None, {})
    t = time.perf_counter()
    review = review_labels.run(params, work / "shards", work / "review")
    review_seconds = time.perf_counter() - t
    suspects = pd.read_csv(work / "review" / "suspects.csv")
    mean_train = statistics.mean(r["train_seconds"] for r in first)
    by_class = suspects.groupby(["given_label", "suggested_label"]).size()
    return {"sample": str(sample), "images": review["images"], "suspects": len(suspects),
            "suspects_by_given_to_suggested": {f"{g} -> {s_}": int(n) for (g, s_), n in by_class.items()},
            "out_of_fold_agreement": review["out_of_fold_agreement"], "review_seconds": round(review_seconds, 1),
            "one_training_seconds": round(mean_train, 1),
            "review_to_one_training": round(review_seconds / mean_train, 2), "run1": first,
            "data_steps_seconds": round(prep["seconds"], 1), "review_folder": str(work / "review"),
            "top": suspects.head(top)[["rank", "path", "patient_id", "given_label", "suggested_label", "score",
                                       "p_suggested", "split"]].to_dict("records")}


def _overrides_columns() -> list[str]:
    from components.core.data import overrides

    return overrides.COLUMNS


def main(argv: list[str] | None = None) -> None:
    from components.core.contract.params.schema import load_params

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--noise-models", nargs="+", default=["uniform", "similar"], choices=["uniform", "similar"])
    ap.add_argument("--demo-seeds", type=int, nargs="+", default=[1, 2],
                    help="data.demo.seed of each case (0 chose the review's recipe: leave it out)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (each case)")
    ap.add_argument("--retrain", action="store_true", help="also accept, confirm by the truth, re-ingest, retrain")
    ap.add_argument("--sample", type=Path, help="real films instead (a class-folder tree with MANIFEST.csv, e.g. "
                                                "../shared/data/cxr-sample): the top suspects, the time")
    ap.add_argument("--top", type=int, default=12, help="with --sample: how many suspects to print")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--patients", type=int, help="override data.demo.patients_per_class (smoke runs)")
    ap.add_argument("--epochs", type=int, help="override the training's and the review's epochs (smoke runs)")
    ap.add_argument("--size", type=int, help="override train.image_size and review.image_size (smoke runs)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base = load_params(ROOT / "params.yaml").model_dump(mode="json", by_alias=True, exclude_none=True)
    smoke = {k: v for k, v in (("data.demo.patients_per_class", a.patients), ("review.epochs", a.epochs),
                               ("train.image_size", a.size), ("review.image_size", a.size)) if v}
    if a.patients:  # params are checked whole: a few validation patients cannot keep 0.85 (never evaluated here)
        smoke["evaluate.target_sensitivity"] = {c: 0.5 for c in base["evaluate"]["target_sensitivity"]}
    if a.epochs:
        smoke["train.phases"] = [{**ph, "epochs": a.epochs} for ph in base["train"]["phases"]]
    from components.core.contract.params.schema import apply_overrides

    base = apply_overrides(base, {"review.enabled": True, "evaluate.external": [], **smoke})
    if a.sample:
        with tempfile.TemporaryDirectory() as tmp:
            real = real_case(base, a.sample.resolve(), a.seeds, Path(a.work or tmp) / "sample", a.top)
        print(json.dumps({"machine": machine(), **real}, indent=2, default=str))
        print(table(["rank", "path", "patient", "given", "suggested", "p(given)", "p(suggested)", "split"],
                    [list(r.values()) for r in real["top"]]))
        return
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.noise_models:
            for demo_seed in a.demo_seeds:
                work = Path(a.work or tmp) / f"{model}-{demo_seed}"
                cases.append(one_case(base, a.noise, model, demo_seed, a.seeds, a.retrain, work, a.patients))
    print(json.dumps({"machine": machine(), "cases": cases}, indent=2, default=str))
    rows = []
    for c in cases:
        q = c["list"]
        rows.append([c["noise_model"], c["demo_seed"], f"{q['planted_reviewed']}", f"{q['suspects']}",
                     q["precision"], q["recall"],
                     *(f"{q[f'top{k}']['precision']} ({q[f'top{k}']['hits']}/{q[f'top{k}']['looked_at']})"
                       for k in BUDGETS),
                     q["suggestion_is_true_class"], c["review"]["seconds"], c["one_training_seconds"],
                     c["review_to_one_training"]])
    print(table(["noise", "demo seed", "planted (train+val)", "suspects", "list precision", "list recall",
                 *(f"precision@{k}" for k in BUDGETS), "suggestion = true class", "review s", "one training s",
                 "review / training"], rows))
    if a.retrain:
        rows = [[c["noise_model"], c["demo_seed"], r1["seed"], r1["clean_set_accuracy"], r2["clean_set_accuracy"],
                 r1["test_split_true_label_accuracy"], r2["test_split_true_label_accuracy"]]
                for c in cases for r1, r2 in zip(c["run1"], c["run2"], strict=True)]
        print(table(["noise", "demo seed", "train seed", "clean set acc. run 1", "run 2 (after the review)",
                     "test split (true labels) run 1", "run 2"], rows))


if __name__ == "__main__":
    main()
