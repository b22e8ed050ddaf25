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


def _external_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--main-manifest", default="data/validated/manifest.csv",
                   help="the main data: external images also found there are dropped")
    p.add_argument("--out", default="data/external", help="one folder per external set (raw, validated, shards)")


def _external(args: argparse.Namespace) -> Any:
    from components import external

    return external.run(_params(args), args.main_manifest, args.out)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--model-dir", default="models", help="folder with model.keras (+ history, train summary)")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--external", default=None, help="prepared external sets (`cxr external`), e.g. data/external")
    p.add_argument("--out", default="reports/eval", help="report folder: predictions, plots, galleries")
    p.add_argument("--metrics", default="reports/metrics.json")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _evaluate(args: argparse.Namespace) -> Any:
    from components import evaluate

    return evaluate.run(_params(args), args.model_dir, args.shards, args.out, args.metrics,
                        track=not args.no_mlflow, external_dir=args.external)


# ---------------------------------------------------------------- registry and serving
def _gate_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--metrics", default="reports/metrics.json", help="the candidate's test metrics")
    p.add_argument("--shards", default="data/shards", help="the test split the champion is re-evaluated on")
    p.add_argument("--images", default="data/raw", help="image root (to decode the test split for a champion "
                   "with another input size)")
    p.add_argument("--out", default="reports/gate.json")


def _gate(args: argparse.Namespace) -> Any:
    from components import gate

    return gate.run(_params(args), args.metrics, args.shards, args.out, args.images)


def _register_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--gate", default="reports/gate.json")
    p.add_argument("--model-dir", default="models")
    p.add_argument("--metrics", default="reports/metrics.json")
    p.add_argument("--validation", default="reports/validation/summary.json")
    p.add_argument("--split-report", default="reports/split/summary.json")
    p.add_argument("--external-summary", default="data/external/summary.json")
    p.add_argument("--out", default="reports/registration.json")


def _register(args: argparse.Namespace) -> Any:
    from components import register

    return register.run(_params(args), args.gate, args.model_dir, args.metrics, args.out, args.validation,
                        args.split_report, args.external_summary)


def _promote_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--version", help="model version to promote")
    group.add_argument("--alias", default=None, help="promote the version behind this alias (default: challenger)")


def _promote(args: argparse.Namespace) -> Any:
    from components import promote

    return promote.promote(_params(args), args.version, args.alias)


def _rollback(args: argparse.Namespace) -> Any:
    from components import promote

    return promote.rollback(_params(args))


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a path "
                        "(default: models:/<registry.model_name>@champion)")


def _load_bundle(args: argparse.Namespace):
    from components.core import registry, tracking

    params = _params(args)
    uri = args.model or f"models:/{params.registry.model_name}@{registry.CHAMPION}"
    if uri.startswith(("models:/", "runs:/")):
        tracking.setup(params)
    return registry.load(uri)


def _predict_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _model_arg(p)
    p.add_argument("--input", required=True, help="an image, a folder of images, or a CSV with a path column")
    p.add_argument("--output", default="preds.csv")
    p.add_argument("--root", help="CSV paths must resolve inside this folder (default: the CSV's folder)")
    p.add_argument("--batch-size", type=int, default=64)


def _predict(args: argparse.Namespace) -> Any:
    from serving import predict

    return predict.run(_load_bundle(args), args.input, args.output, args.root, args.batch_size)


def _serve_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _model_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)


def _serve(args: argparse.Namespace) -> Any:
    from serving import app

    bundle = _load_bundle(args)  # refuses to start when the model cannot be loaded
    app.serve(bundle, args.host, args.port)
    return 0


# ---------------------------------------------------------------- Kubeflow Pipelines
def _pipeline_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    c = sub.add_parser("compile", help="write the KFP v2 pipeline spec (defaults from params.yaml)")
    c.add_argument("--params", default="params.yaml")
    c.add_argument("--output", default="pipelines/compiled/cxr_training.yaml")
    c.add_argument("--image", help="project image the tasks run in (default: the published GPU image)")
    c.add_argument("--tracking-uri", help="MLflow URI inside the cluster")
    c.add_argument("--gpus", type=int, help="GPUs for the train task (default 1)")
    r = sub.add_parser("run-local", help="run the whole pipeline with kfp.local in this environment")
    r.add_argument("--params", default="params.yaml")
    r.add_argument("--root", default=".cxr/kfp-local", help="pipeline root: outputs and the local cache")
    r.add_argument("--no-cache", action="store_true")
    r.add_argument("--data-uri", default="", help="dvc://<git-url>@<rev>: ingest what that commit pins")
    for name, text in (("submit", "start a run on a Kubeflow Pipelines server"),
                       ("schedule", "create or replace a recurring run (idempotent by --name)")):
        q = sub.add_parser(name, help=text)
        q.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
        q.add_argument("--package", default="pipelines/compiled/cxr_training.yaml")
        q.add_argument("--experiment", default="cxr")
        q.add_argument("--data-uri", default="", help="dvc://<git-url>@<rev>")
        if name == "schedule":
            q.add_argument("--cron", default="0 3 * * 1", help="5-field cron (default: Mondays 03:00)")
            q.add_argument("--name", default="cxr-training-weekly")


def _pipeline(args: argparse.Namespace) -> Any:
    from pipelines import ops

    action = args.pipeline_command
    if action == "compile":
        cfg = ops.cluster_config(image=args.image, tracking_uri=args.tracking_uri, gpus=args.gpus)
        return ops.compile_pipeline(args.output, args.params, cfg)
    if action == "run-local":
        extra = {"data_uri": args.data_uri} if args.data_uri else None
        return ops.run_local(args.params, args.root, cache=not args.no_cache, arguments=extra)
    extra = {"data_uri": args.data_uri} if args.data_uri else None
    if action == "submit":
        return ops.submit(args.host, args.package, args.experiment, arguments=extra)
    return ops.schedule(args.host, args.cron, args.name, args.package, args.experiment, arguments=extra)


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
    ("external", "ingest, validate and decode the external test sets (evaluate.external)", _external_args,
     _external),
    ("evaluate", "evaluate the best checkpoint on the test split: metrics, plots, top losses, Grad-CAM",
     _evaluate_args, _evaluate),
    ("gate", "pass/fail the candidate on thresholds and against the re-evaluated champion", _gate_args, _gate),
    ("register", "register a gated model version in MLflow (tags, model card) and alias it challenger",
     _register_args, _register),
    ("promote", "make a gated version the champion (the old one becomes previous-champion)", _promote_args, _promote),
    ("rollback", "swap champion and previous-champion", _common, _rollback),
    ("predict", "batch prediction for an image, a folder or a CSV → preds.csv", _predict_args, _predict),
    ("serve", "REST API + web page for a registered model (POST /predict, /health, /model, /)",
     _serve_args, _serve),
    ("pipeline", "Kubeflow Pipelines: compile | run-local | submit | schedule", _pipeline_args, _pipeline),
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
