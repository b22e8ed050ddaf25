"""Recipes benchmark: every CPU-feasible recipe on the shared real sample and on the demo, through the real
steps (ingest → split → preprocess → train → evaluate), with test accuracy, macro F1 and their patient-level
95% CIs (evaluate's intervals on patients), epochs and seconds; and for the GPU recipes (seed1-vgg16, seed2-fastai at
224 px) a time estimate for one H100 from counted FLOPs and published peak throughput (unverified until a GPU
run).

The baseline in the same run is ``before``: the default training of the previous params.yaml (20 epochs, early
stopping patience 6, no BatchNorm refresh), which collapsed to a constant predictor on the real sample.

    python -m benchmarks.recipes --data sample demo --recipes before demo cpu-small kermany-2class
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, SAMPLE, machine, table

# the previous default training (params.yaml before the recipes), on the same code: the baseline
BEFORE = {"train": {"phases": [{"epochs": 20, "trainable": "all", "lr": 0.003}],
                    "early_stopping": {"monitor": "val_loss", "patience": 6}, "refresh_batchnorm": 0}}
GPU_RECIPES = ("seed1-vgg16", "seed2-fastai")
# published dense peak of one H100 SXM (NVIDIA datasheet): BF16/FP16 tensor cores, without sparsity
H100_PEAK_TFLOPS = 989.0
# model FLOPs utilisation convnet training reaches: a range, not a measurement. Upper end: NVIDIA's
# TensorFlow ResNet-50 v1.5 example, 1,270 img/s on one V100 with AMP + XLA (as quoted in
# NVIDIA/DeepLearningExamples#837) = 1,270 × 24.6 GFLOP ≈ 31 TFLOP/s of 125, 25%. Lower end: ResNet-50 on an
# H100 at ~3,000 img/s ≈ 74 TFLOP/s of 989, 8% (BatchNorm and memory traffic do not scale with tensor cores).
MFU = (0.08, 0.25)
KERMANY_TRAIN, KERMANY_EVAL = 5216, 640  # paultimothymooney/chest-xray-pneumonia: train, val + test images


def params_for(data: str, recipe: str, epochs: int | None, size: int | None, demo_patients: int | None):
    import yaml

    from components.core.contract import recipes
    from components.core.contract.params.schema import parse_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = recipes.overlay(raw, BEFORE if recipe == "before" else recipes.load(recipe).overlay)
    if data == "sample":
        raw["data"].update({"source": "dir", "path": str(SAMPLE)})
    else:
        raw["data"]["source"] = "demo"
    if demo_patients:  # smoke runs: few validation patients per class, so a target a conformal threshold can keep
        raw["data"]["demo"]["patients_per_class"] = demo_patients
        raw["evaluate"]["target_sensitivity"] = {c: 0.5 for c in raw["evaluate"]["target_sensitivity"]}
    raw["evaluate"].update({"gradcam_per_class": 0, "top_losses": 0, "external": []})
    if epochs:
        raw["train"]["phases"] = [{**ph, "epochs": epochs} for ph in raw["train"]["phases"]]
    if size:
        raw["train"]["image_size"] = size
    return parse_params(raw, f"{recipe} on {data}")


def run_one(work: Path, data: str, recipe: str, epochs: int | None, size: int | None,
            demo_patients: int | None) -> list[object]:
    from components import evaluate, ingest, preprocess, split, train
    from components.core.contract.fsutil import read_json

    p = params_for(data, recipe, epochs, size, demo_patients)
    d = work / f"{data}-{recipe}"
    ingest.run(p, d / "raw")
    split.run(p, d / "raw" / "manifest.csv", d / "splits", d / "reports")
    preprocess.run(p, d / "splits", d / "raw", d / "shards")
    started = time.perf_counter()
    summary = train.run(p, d / "shards", d / "models", d / "state", track=False)
    seconds = time.perf_counter() - started
    evaluate.run(p, d / "models", d / "shards", d / "eval", d / "metrics.json", track=False)
    m = read_json(d / "metrics.json")
    ci = m.get("ci") or {}

    def with_ci(key: str) -> str:
        c = ci.get(key)
        return f"{m[key]:.3f} [{c['low']:.2f}, {c['high']:.2f}]" if c else f"{m[key]:.3f}"

    return [data, recipe, f"{p.train.backbone}@{p.train.image_size}",
            len(p.data.classes), m["n"], with_ci("accuracy"), with_ci("macro_f1"),
            f"{summary['epochs_run']} (best {summary['best_epoch']})", round(seconds, 1), summary["status"]]


# ---------------------------------------------------------------- GPU estimate from counted FLOPs
def layer_flops(model) -> dict[str, float]:
    """Forward FLOPs per image of each Conv2D / DepthwiseConv2D / Dense layer: 2 · multiply-adds, i.e.
    2 · (kernel weights) · (output positions). BatchNorm, pooling and activations are left out (< 1%)."""
    import numpy as np

    out = {}
    for layer in model.layers:
        kind = layer.__class__.__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense") or not layer.weights:
            continue
        kernel = int(np.prod(layer.kernel.shape))
        shape = layer.output.shape
        positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        out[layer.name] = 2.0 * kernel * positions
    return out


def train_flops(model, flops: dict[str, float]) -> float:
    """FLOPs per training image: the forward pass, plus input gradients for every layer after the earliest
    trainable one (≈ its forward), plus weight gradients for every trainable layer (≈ its forward)."""
    names = [layer.name for layer in model.layers]
    trainable = [n for n in flops if model.get_layer(n).trainable]
    bn_train = [layer.name for layer in model.layers
                if layer.__class__.__name__ == "BatchNormalization" and layer.trainable]
    first = min(names.index(n) for n in trainable + bn_train)
    backward_input = sum(f for n, f in flops.items() if names.index(n) > first)
    return sum(flops.values()) + backward_input + sum(flops[n] for n in trainable)


def gpu_estimates(gpu_recipes: list[str]) -> list[list[object]]:
    import keras

    from components.core.contract import recipes
    from components.core.contract.params.schema import parse_params
    from components.core.model import models

    rows = []
    for name in gpu_recipes:
        p = parse_params(recipes.overlay({}, recipes.load(name).overlay))
        cfg = p.train.model_copy(update={"weights": "none"})
        keras.utils.set_random_seed(0)
        model = models.build_model(cfg, 3)
        flops = layer_flops(model)
        fwd = sum(flops.values())
        total = 0.0
        per_phase = []
        for ph in cfg.phases:
            models.set_trainable(model, ph.trainable, cfg.freeze_batchnorm, ph.train_bn)
            tr = train_flops(model, flops)
            per_phase.append(f"{tr / 1e9:.1f}")
            refresh = min(KERMANY_TRAIN, cfg.refresh_batchnorm * cfg.batch_size) if any(
                layer.__class__.__name__ == "BatchNormalization" and layer.trainable for layer in model.layers) else 0
            total += ph.epochs * (KERMANY_TRAIN * tr + (KERMANY_EVAL + refresh) * fwd)
        epochs = sum(ph.epochs for ph in cfg.phases)
        fast, slow = (total / (H100_PEAK_TFLOPS * 1e12 * u) for u in (MFU[1], MFU[0]))
        rows.append([name, f"{cfg.backbone}@{cfg.image_size}", f"{model.count_params() / 1e6:.1f} M",
                     f"{fwd / 1e9:.1f}", " / ".join(per_phase), epochs, f"{total / 1e15:.2f}",
                     f"{fast:.0f}–{slow:.0f} s", f"{KERMANY_TRAIN * epochs / slow:,.0f}–"
                     f"{KERMANY_TRAIN * epochs / fast:,.0f}", "unverified (no GPU run yet)"])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["sample", "demo"], choices=["sample", "demo"])
    ap.add_argument("--recipes", nargs="+", default=["before", "demo", "cpu-small", "kermany-2class"])
    ap.add_argument("--gpu-recipes", nargs="*", default=list(GPU_RECIPES))
    ap.add_argument("--epochs", type=int, help="override every phase's epochs (smoke runs)")
    ap.add_argument("--size", type=int, help="override train.image_size (smoke runs)")
    ap.add_argument("--demo-patients", type=int, help="override data.demo.patients_per_class (smoke runs)")
    ap.add_argument("--work", help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for data in args.data:
            for recipe in args.recipes:
                rows.append(run_one(work, data, recipe, args.epochs, args.size, args.demo_patients))
                print(json.dumps(rows[-1]), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(table(["data", "recipe", "model", "classes", "test images", "accuracy [95% CI]", "macro F1 [95% CI]",
                 "epochs", "train s", "status"], rows))
    if args.gpu_recipes:
        print()
        print(f"GPU estimate: one H100 SXM, {H100_PEAK_TFLOPS:.0f} TFLOP/s dense BF16 peak at "
              f"{MFU[0]:.0%}–{MFU[1]:.0%} "
              f"utilisation; Kermany: {KERMANY_TRAIN} training images per epoch, {KERMANY_EVAL} evaluated")
        print(table(["recipe", "model", "params", "forward GFLOP/img", "train GFLOP/img per phase", "epochs",
                     "PFLOP total", "H100 compute time", "train img/s implied", "status"],
                    gpu_estimates(args.gpu_recipes)))


if __name__ == "__main__":
    main()
