"""The label review on the demo with planted label noise: does it find the flips, what does it cost, and does
accepting its proposals (after a person's check) make a better model?

    python -m benchmarks.label_review --noise 0.1 --seeds 42 43 44

1. The shipped demo (params.yaml) with ``data.demo.label_noise`` planted; ingest → validate → split →
   preprocess → train (run 1, one per training seed) → ``cxr review-labels`` (the default review params).
2. Recall and precision of the review among its top k (k = the planted flips it could see: train + val).
3. ``--accept`` of every suspect as proposals; the "person" is the generator's truth: a proposal whose image
   was planted is confirmed (relabelled to the film's true class, which is the suggestion or, in 3 classes,
   the third one), a proposal on a correct label is rejected (its line removed). Then ingest applies the
   confirmed lines → validate → split → preprocess → train (run 2, same seeds).
4. Both runs on clean labels: a fresh demo set (another seed, no noise) none of them saw, and each run's own
   test split scored against the films' true classes. And the review's seconds against one training's.
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
    """A fresh demo set, no noise, other patients: (x, y) as the model takes them (crop resize)."""
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
    flips = synthetic.planted_flips(list(params.data.classes), d.patients_per_class, d.label_noise, d.seed)
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
                    "clean_set_accuracy": round(accuracy(work / f"models-{seed}", *clean), 4),
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


def main(argv: list[str] | None = None) -> None:
    from components import review_labels
    from components.core.contract.params.schema import apply_overrides, load_params, parse_params
    from components.core.data import manifest
    from components.core.data.sources.demo import PLANTED

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="training seeds (each run)")
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
    params = parse_params(apply_overrides(base, {"data.demo.label_noise": a.noise, "review.enabled": True,
                                                 "evaluate.external": [], **smoke}))
    truth = true_labels(params)
    clean = clean_set(list(params.data.classes), params.train.image_size, patients=a.patients or 40)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        run1, run2 = work / "run1", work / "run2"
        prep1 = data_steps(params, run1, None)
        first = train_and_score(params, run1, a.seeds, clean, truth)
        t = time.perf_counter()
        review = review_labels.run(params, run1 / "shards", run1 / "review")
        review_seconds = time.perf_counter() - t
        raw = manifest.read(run1 / "raw" / "manifest.csv")
        planted = set(raw.loc[raw[PLANTED].astype(str) == "True", "path"])
        reviewed = set(pd.read_csv(run1 / "review" / "pred_probs.csv")["path"])
        suspects = pd.read_csv(run1 / "review" / "suspects.csv")
        k = len(planted & reviewed)
        hits = len(set(suspects["path"].head(k)) & planted)
        k = max(k, 1)  # (a smoke run may plant nothing the review sees)
        found_all = len(set(suspects["path"]) & planted)
        decisions = work / "label_overrides.csv"
        decisions.write_text("sha256,action,label,status,who,why,path\n")
        review_labels.run(params, run1 / "shards", run1 / "review", accept=len(suspects), label_overrides=decisions)
        person = confirm_as_a_person(decisions, truth, run1 / "raw" / "manifest.csv")
        prep2 = data_steps(params, run2, decisions)
        second = train_and_score(params, run2, a.seeds, clean, truth)
    mean_train = statistics.mean(r["train_seconds"] for r in first)
    result = {
        "machine": machine(), "noise": a.noise, "images": len(raw), "planted_images": len(planted),
        "planted_reviewed": k, "review": {"folds": review["folds"], "epochs": review["epochs"],
                                          "image_size": review["image_size"], "seconds": round(review_seconds, 1),
                                          "suspects": len(suspects), "top_k_hits": hits,
                                          "top_k_recall": round(hits / k, 3),
                                          "top_k_precision": round(hits / max(1, min(k, len(suspects))), 3),
                                          "planted_among_all_suspects": found_all,
                                          "images_trained": review["images_trained"]},
        "cost_ratio_review_to_one_training": round(review_seconds / mean_train, 2),
        "cost_ratio_to_median_training": round(review_seconds / statistics.median(r["train_seconds"] for r in first),
                                               2),
        "person": person, "applied": prep2["ingest"].get("label_overrides"),
        "run1": first, "run2": second,
        "data_steps_seconds": [round(prep1["seconds"], 1), round(prep2["seconds"], 1)],
    }
    print(json.dumps(result, indent=2, default=str))
    rows = [[r1["seed"], r1["clean_set_accuracy"], r2["clean_set_accuracy"], r1["test_split_true_label_accuracy"],
             r2["test_split_true_label_accuracy"], r1["train_seconds"]] for r1, r2 in zip(first, second, strict=True)]
    rows.append(["mean", *(round(statistics.mean(x), 4) for x in zip(*[r[1:] for r in rows], strict=True))])
    print(table(["train seed", "clean set acc. run 1", "clean set acc. run 2", "test split (true labels) run 1",
                 "run 2", "train s (run 1)"], rows))


if __name__ == "__main__":
    main()
