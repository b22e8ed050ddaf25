"""The ``cxr`` command: one subcommand per pipeline step, plus predict/serve/promote/pipeline.

Only ``argparse`` is imported up front, so ``cxr --help`` answers at once; each handler imports
the step it runs (TensorFlow, Great Expectations and MLflow load only where needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], Any]
AddArgs = Callable[[argparse.ArgumentParser], None]


def _params(args: argparse.Namespace):
    from components.core.config import load_params

    overrides = {}
    for item in args.set or []:
        if "=" not in item:
            from components.core.errors import ParamsError

            raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
        key, value = item.split("=", 1)
        import yaml

        overrides[key] = yaml.safe_load(value)
    return load_params(args.params, overrides)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter for this run, e.g. --set train.image_size=64 (repeatable)")


# ---------------------------------------------------------------- data plane
def _ingest_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--out", default="data/raw", help="output folder: images + manifest.csv")
    p.add_argument("--source-path", help="read this folder/CSV instead of data.path (or a downloaded Kaggle folder)")


def _ingest(args: argparse.Namespace) -> Any:
    from components import ingest

    return ingest.run(_params(args), args.out, source_path=args.source_path)


def _validate_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--raw", default="data/raw", help="ingested folder (with manifest.csv)")
    p.add_argument("--out", default="data/validated", help="output folder: manifest.csv + quarantine.csv")
    p.add_argument("--reports", default="reports/validation", help="summary.json and GX Data Docs")


def _validate(args: argparse.Namespace) -> Any:
    from components import validate

    return validate.run(_params(args), args.raw, args.out, args.reports)


def _split_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--manifest", default="data/validated/manifest.csv")
    p.add_argument("--out", default="data/splits", help="output folder: train.csv, val.csv, test.csv")
    p.add_argument("--reports", default="reports/split")


def _split(args: argparse.Namespace) -> Any:
    from components import split

    return split.run(_params(args), args.manifest, args.out, args.reports)


# ---------------------------------------------------------------- model
def _preprocess_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--splits", default="data/splits", help="folder with train.csv, val.csv, test.csv")
    p.add_argument("--images", default="data/raw", help="image root the manifests' paths are relative to")
    p.add_argument("--out", default="data/shards", help="output folder: uint8 .npy shards per split")


def _preprocess(args: argparse.Namespace) -> Any:
    from components import preprocess

    return preprocess.run(_params(args), args.splits, args.images, args.out)


def _train_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--out", default="models", help="output folder: model.keras, history.csv, train_summary.json")
    p.add_argument("--state", default=".cxr/train-state",
                   help="resume state (per-epoch checkpoints); a killed run restarted with the same args resumes")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _train(args: argparse.Namespace) -> Any:
    from components import train

    return train.run(_params(args), args.shards, args.out, args.state, track=not args.no_mlflow)


def _lr_find_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--out", default="reports/lr_find", help="folder for lr_find.png and lr_find.json")
    p.add_argument("--min-lr", type=float, default=1e-7)
    p.add_argument("--max-lr", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=100, help="batches in the sweep")


def _lr_find(args: argparse.Namespace) -> Any:
    from components import lr_find

    return lr_find.run(_params(args), args.shards, args.out, args.min_lr, args.max_lr, args.steps)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--model-dir", default="models", help="folder with model.keras (+ history, train summary)")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--out", default="reports/eval", help="report folder: predictions, plots, galleries")
    p.add_argument("--metrics", default="reports/metrics.json")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _evaluate(args: argparse.Namespace) -> Any:
    from components import evaluate

    return evaluate.run(_params(args), args.model_dir, args.shards, args.out, args.metrics,
                        track=not args.no_mlflow)


COMMANDS: list[tuple[str, str, AddArgs, Handler]] = [
    ("ingest", "bring images from the demo generator, a folder/CSV or Kaggle into data/raw",
     _ingest_args, _ingest),
    ("validate", "check images and manifest with Great Expectations; quarantine bad files; bias audit",
     _validate_args, _validate),
    ("split", "split the validated manifest into train/val/test by patient, stratified by label",
     _split_args, _split),
    ("preprocess", "decode each split once into uint8 shards at train.image_size", _preprocess_args, _preprocess),
    ("train", "train the classifier in phases (head, then unfreeze); resumable; logged to MLflow",
     _train_args, _train),
    ("lr-find", "LR range test on the first phase: a loss-vs-LR plot and a suggested learning rate",
     _lr_find_args, _lr_find),
    ("evaluate", "evaluate the best checkpoint on the test split: metrics, plots, top losses, Grad-CAM",
     _evaluate_args, _evaluate),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr",
        description="cxr-mlops: chest X-ray classifier pipeline (DVC, Great Expectations, Keras, MLflow, KFP).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, add_args, handler in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from components.core.errors import CxrError

    try:
        result = args.handler(args)
    except CxrError as err:
        print(f"cxr {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"cxr {args.command}: interrupted", file=sys.stderr)
        return 130
    if isinstance(result, int):
        return result
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
