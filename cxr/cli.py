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


COMMANDS: list[tuple[str, str, AddArgs, Handler]] = [
    ("ingest", "bring images from the demo generator, a folder/CSV or Kaggle into data/raw",
     _ingest_args, _ingest),
    ("validate", "check images and manifest with Great Expectations; quarantine bad files; bias audit",
     _validate_args, _validate),
    ("split", "split the validated manifest into train/val/test by patient, stratified by label",
     _split_args, _split),
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
