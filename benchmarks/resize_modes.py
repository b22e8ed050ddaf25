"""Resize modes vs shortcuts: `preprocess.resize` pad, pad_edge and crop on the shared real sample.

For each mode the same validated and split data is preprocessed, a small_cnn is trained with several
seeds, and the shortcut stress tests (components/core/eval/shortcut.py) run on the test split. Printed per
mode (mean ± sd over seeds): test accuracy, the model's balanced accuracy with the central field blanked
(the same share of the visible film in every mode: `evaluate.shortcut.central_field.area`, printed as
measured), the share of PNEUMONIA's Grad-CAM heat outside the central field (and the largest excess over the
area share of any class), the border-only probe (it does not depend on the model), how many runs were
flagged by each test, and ratios against `pad` measured in the same run.

    python -m benchmarks.resize_modes --seeds 1 2 3 --epochs 40

``--cost``: instead, what the stress tests add to `cxr evaluate` on the demo (params.yaml's data and model):
evaluate with `evaluate.shortcut.enabled` true and false, alternated, in the same run.

    python -m benchmarks.resize_modes --cost --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CLASSES, SAMPLE, machine, table


def _params(data: str, mode: str, size: int, epochs: int, seed: int, sample: Path):
    from components.core.contract.params.schema import parse_params

    raw = {
        "validate": {"workers": 2, "bias_audit": {"enabled": False}, "critical": ["label_in_classes"]},
        "split": {"test_fraction": 0.2},
        "preprocess": {"resize": mode, "workers": 2},
        "train": {"backbone": "small_cnn", "weights": "none", "image_size": size, "batch_size": 32,
                  "phases": [{"epochs": epochs, "trainable": "all", "lr": 0.003}],
                  "head": {"pooling": "max", "dense_units": 128, "dropout": 0.3},
                  # BatchNorm statistics of a from-scratch net settle late: val_loss is often best at epoch 1
                  # for a while, so patience must outlast that
                  "early_stopping": {"patience": max(3, epochs // 3)},
                  "reduce_lr": {"factor": 0.3, "patience": 3, "min_lr": 1e-6},
                  "freeze_batchnorm": False, "seed": seed},
    }
    if data == "sample":
        raw["data"] = {"source": "dir", "path": str(sample), "classes": CLASSES}
    else:
        raw["data"] = {"classes": CLASSES, "demo": {"patients_per_class": 40, "max_images_per_patient": 3,
                                                    "min_side": 160, "max_side": 320, "shortcut": data.split(":")[1]
                                                    if ":" in data else "none"}}
    return parse_params(raw)


def _mean_sd(xs: list[float | None]) -> str:
    v = np.array([x for x in xs if x is not None], float)
    if not len(v):
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def _mean(xs: list[float | None]) -> float:
    v = [x for x in xs if x is not None]
    return float(np.mean(v)) if v else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["pad", "pad_edge", "crop"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--data", default="sample", help="sample (../shared/data/cxr-sample) | demo | demo:<shortcut>")
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    ap.add_argument("--cost", action="store_true", help="measure the seconds the stress tests add to evaluate")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--params", type=Path, default=Path(__file__).resolve().parents[1] / "params.yaml")
    args = ap.parse_args(argv)
    if args.cost:
        return _cost(args)
    if args.modes[0] != "pad":
        args.modes = ["pad", *[m for m in args.modes if m != "pad"]]  # the baseline comes first
    logging.getLogger("components").setLevel(logging.WARNING)
    from components import ingest, preprocess, split, train, validate
    from components.core.data import shards as shard_io
    from components.core.eval import shortcut
    from components.core.model import models

    results: dict[str, list[dict]] = {m: [] for m in args.modes}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        p0 = _params(args.data, "pad", args.size, args.epochs, args.seeds[0], args.sample)
        ingest.run(p0, root / "raw")
        validate.run(p0, root / "raw", root / "validated", root / "reports" / "validation")
        split.run(p0, root / "validated" / "manifest.csv", root / "splits", root / "reports" / "split")
        for mode in args.modes:
            shards = root / f"shards-{mode}"
            preprocess.run(_params(args.data, mode, args.size, args.epochs, args.seeds[0], args.sample),
                           root / "splits", root / "raw", shards)
            test = shard_io.load_split(shards, "test")
            for seed in args.seeds:
                p = _params(args.data, mode, args.size, args.epochs, seed, args.sample)
                out = root / f"model-{mode}-{seed}"
                t = time.perf_counter()
                train.run(p, shards, out / "models", out / "state", track=False)
                train_s = time.perf_counter() - t
                model = models.load_model(out / "models" / "model.keras")
                proba = model.predict(test.x, verbose=0)
                t = time.perf_counter()
                block = shortcut.stress_tests(model, {"test": shortcut.EvalSet(test.x, test.y, test.rows, mode)},
                                              CLASSES, p.evaluate.shortcut)
                stress_s = time.perf_counter() - t
                r = block["sets"]["test"]
                att = r["attention_outside"]
                pc = att.get("per_class") or {}
                results[mode].append({
                    "accuracy": float(np.mean(proba.argmax(1) == test.y)),
                    "masked": r["centre_masked"]["value"], "chance": r["centre_masked"]["chance"],
                    "blanked": r["blanked_share_of_film"], "blanked_square": r["blanked_share_of_square"],
                    "pneumonia_outside": (pc.get("PNEUMONIA") or {}).get("share_outside"),
                    "pneumonia_area": (pc.get("PNEUMONIA") or {}).get("area_outside"),
                    "excess": att.get("value"), "border": r["border_probe"].get("value"),
                    "flags": sorted({f["test"] for f in block["flags"]}), "train_s": train_s, "stress_s": stress_s,
                })
                print(f"{mode} seed {seed}: accuracy {results[mode][-1]['accuracy']:.3f}, centre-masked "
                      f"{r['centre_masked']['value']}, flags {results[mode][-1]['flags']}", flush=True)
    base = results["pad"]
    rows = []
    for mode, runs in results.items():
        acc = [x["accuracy"] for x in runs]
        masked_above = _mean([x["masked"] - x["chance"] for x in runs if x["masked"] is not None])
        base_above = _mean([x["masked"] - x["chance"] for x in base if x["masked"] is not None])
        per_test = ", ".join(f"{t} {sum(t in x['flags'] for x in runs)}/{len(runs)}"
                             for t in ("centre_masked", "attention_outside", "border_probe"))
        rows.append([
            mode, _mean_sd(acc), f"{_mean(acc) / _mean([x['accuracy'] for x in base]):.2f}",
            f"{_mean([x['blanked'] for x in runs]):.3f} / {_mean([x['blanked_square'] for x in runs]):.3f}",
            _mean_sd([x["masked"] for x in runs]),
            f"{masked_above / base_above:.2f}" if base_above > 0 else "n/a",
            f"{_mean_sd([x['pneumonia_outside'] for x in runs])} "
            f"(area {_mean([x['pneumonia_area'] for x in runs]):.2f})",
            _mean_sd([x["excess"] for x in runs]),
            f"{_mean([x['border'] for x in runs]):.3f}", per_test, f"{_mean([x['stress_s'] for x in runs]):.1f}",
        ])
    n_test = len(test.y)
    print(f"\nresize modes on {args.data} ({n_test} test images), small_cnn @ {args.size} px, {args.epochs} epochs, "
          f"seeds {args.seeds}; chance balanced accuracy {base[0]['chance']:.3f}; {machine()}")
    print(table(["resize", "test accuracy", "ratio vs pad", "blanked share of film / of square",
                 "centre-masked balanced acc", "above-chance ratio vs pad", "PNEUMONIA heat outside the field",
                 "max excess heat outside", "border probe (data only)", "runs flagged, per test", "stress tests s"],
                rows))


def _cost(args) -> None:
    from components import evaluate, ingest, preprocess, split, train
    from components.core.contract.params.schema import load_params
    from components.core.data import shards as shard_io

    logging.getLogger("components").setLevel(logging.WARNING)
    p = load_params(args.params, {"evaluate.external": [], "train.image_size": args.size})
    off = p.model_copy(update={"evaluate": p.evaluate.model_copy(update={
        "shortcut": p.evaluate.shortcut.model_copy(update={"enabled": False})})})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ingest.run(p, root / "raw")
        split.run(p, root / "raw" / "manifest.csv", root / "splits", root / "reports")
        preprocess.run(p, root / "splits", root / "raw", root / "shards")
        train.run(p, root / "shards", root / "models", root / "state", track=False)
        n = len(shard_io.load_split(root / "shards", "test").y)
        times: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(args.repeats):
            for name, params in (("off", off), ("on", p)):
                t = time.perf_counter()
                evaluate.run(params, root / "models", root / "shards", root / f"e-{name}-{i}",
                             root / f"m-{name}-{i}.json", track=False)
                times[name].append(time.perf_counter() - t)
    on, base = float(np.median(times["on"])), float(np.median(times["off"]))
    print(f"evaluate on the demo test split ({n} images, {p.train.backbone} @ {p.train.image_size} px, "
          f"resize {p.preprocess.resize}), median of {args.repeats}; {machine()}")
    print(table(["evaluate", "seconds", "ratio vs off", "added s"],
                [["shortcut tests off", base, 1.0, 0.0], ["shortcut tests on", on, on / base, on - base]]))


if __name__ == "__main__":
    main()
