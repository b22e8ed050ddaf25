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


# how --set values are read (components/core/contract/params/overrides.py), said here so that `cxr --help` imports
# nothing else
SET_HELP = ("set a parameter for this run, e.g. --set train.image_size=64 (repeatable). VALUE is read as YAML: 64 "
            "is a number, true a boolean, [a, b] a list, {a: 1} a mapping, nothing is null; quote text that has "
            "': ' or '#' in it, or starts with [ { & * ! | > ' \" %% @ (YAML quotes, kept from the shell): "
            "--set 'gate.accept_shortcut_risk=\"Dr. A: reviewed\"'")


def _params(args: argparse.Namespace):
    from components.core.contract.params.overrides import parse_set
    from components.core.contract.params.schema import load_params

    return load_params(args.params, parse_set(args.set))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)


# ---------------------------------------------------------------- pipeline steps (from their specs)
def _add_spec_args(p: argparse.ArgumentParser, spec) -> None:
    """``--<port>`` for each input/output (default: the spec's path), then the spec's options."""
    _common(p)
    for port in spec.inputs:
        p.add_argument(port.flag, dest=port.name, default=port.path, metavar="PATH",
                       help=f"input: {port.help} (default: {port.path})")
    for port in spec.outputs:
        p.add_argument(port.flag, dest=port.name, default=port.path, metavar="PATH",
                       help=f"output: {port.help} (default: {port.path})")
    for opt in spec.options:
        if opt.type is bool:
            action = "store_false" if opt.default else "store_true"
            p.add_argument(opt.cli_flag, dest=opt.name, action=action, help=opt.help)
        else:
            p.add_argument(opt.cli_flag, dest=opt.name, type=opt.type, default=opt.default,
                           help=opt.help + (f" (default: {opt.default})" if opt.default not in (None, "") else ""))


def _step_command(spec) -> tuple[str, str, AddArgs, Handler]:
    actions = STEP_ACTIONS.get(spec.name, ())

    def add_args(p: argparse.ArgumentParser) -> None:
        _add_spec_args(p, spec)
        if actions:
            sub = p.add_subparsers(dest="step_action", metavar="{" + ",".join(a[0] for a in actions) + "}",
                                   required=False, title="instead of the step")
            for name, text, add, act in actions:
                q = sub.add_parser(name, help=text, description=text)
                add(q)
                q.set_defaults(step_action_handler=act)

    def handler(args: argparse.Namespace) -> Any:
        from components import catalog

        if getattr(args, "step_action", None):
            return args.step_action_handler(args)
        kwargs = {x.name: getattr(args, x.name) for x in (*spec.ports, *spec.options)}
        return catalog.module(spec.name).run(_params(args), **kwargs)

    return spec.name, spec.help, add_args, handler


def _review_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--review", dest="review_dir", default="reports/label_review", metavar="PATH",
                   help="the review's output folder (default: reports/label_review)")
    p.add_argument("--raw", dest="raw_dir", default="data/raw", metavar="PATH",
                   help="the ingested images and their manifest.csv (default: data/raw)")
    p.add_argument("--decisions", dest="decisions", default="data/label_overrides.csv", metavar="PATH",
                   help="where each decision goes, as a confirmed line (default: data/label_overrides.csv)")
    p.add_argument("--who", default=None,
                   help="your name, for the who column (default: git config user.name, else $USER)")
    p.add_argument("--host", dest="serve_host", default="127.0.0.1",
                   help="default 127.0.0.1; any other address needs CXR_API_TOKEN (the API's bearer token)")
    p.add_argument("--port", dest="serve_port", type=int, default=8001, help="default 8001")


def _review_serve(args: argparse.Namespace) -> Any:
    import subprocess

    from serving import review_app

    who = args.who
    if not who:
        try:
            who = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            who = ""
        who = who or os.environ.get("USER", "")
    review_app.serve_review(args.review_dir, args.raw_dir, args.decisions, who, args.serve_host, args.serve_port)
    return 0


# actions a step's command takes instead of running the step: `cxr <step> <action>`
STEP_ACTIONS: dict[str, tuple[tuple[str, str, AddArgs, Handler], ...]] = {
    "review-labels": (("serve", "the review page: the suspects one patient at a time (film, Grad-CAM for the given "
                                "and the suggested class, probabilities, the patient's other images); keys keep, "
                                "relabel, exclude, skip, undo; each decision a confirmed line of "
                                "data/label_overrides.csv at once", _review_serve_args, _review_serve),),
}


def _spec_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="spec_command", metavar="ACTION", required=True)
    sub.add_parser("sync", help="write dvc.yaml and the pictures of docs/architecture.md from the code")
    sub.add_parser("check", help="exit 1 when dvc.yaml or docs/architecture.md differs from what the code gives")
    show = sub.add_parser("show", help="print every step's params, inputs, outputs, cache policy and code as JSON")
    show.add_argument("--kfp", metavar="STEP",
                      help="print the source of STEP's KFP component (pipelines/components/) instead")


def _print_component(step: str) -> None:
    """The source of STEP's KFP component(s) (a partitioned step: its part's, then its merge's), each under the
    file and line it is at."""
    import inspect
    from pathlib import Path

    from pipelines import components
    from pipelines.tasks import TASKS

    if step not in [t.step for t in TASKS]:
        from components.core.contract.errors import CxrError

        raise CxrError(f"--kfp {step}: not a task of the pipeline ({', '.join(t.step for t in TASKS)})")
    name = step.replace("-", "_")
    funcs = [getattr(components, n) for n in (f"{name}_partition", name) if hasattr(components, n)]
    root = Path(__file__).resolve().parents[1]
    for i, func in enumerate(funcs):
        lines, start = inspect.getsourcelines(func)
        where = Path(inspect.getsourcefile(func)).resolve()
        where = where.relative_to(root) if where.is_relative_to(root) else where
        print(f"{chr(10) * 2 if i else ''}# {where}:{start}\n{''.join(lines)}", end="")


def _spec(args: argparse.Namespace) -> Any:
    from components import catalog

    if args.spec_command == "show":
        if args.kfp:
            _print_component(args.kfp)
            return None
        return catalog.describe()
    from cxr import docs

    if args.spec_command == "sync":
        done = [catalog.sync(), docs.sync()]
        return {key: [f for d in done for f in d[key]] for key in ("written", "unchanged")}
    stale = [name for name, is_stale in ((catalog.GENERATED, catalog.stale()), (docs.DOC, docs.stale())) if is_stale]
    if stale:
        print(f"stale: {', '.join(stale)} (run `cxr spec sync`)", file=sys.stderr)
        return 1
    return {"up_to_date": [catalog.GENERATED, docs.DOC]}


def _promote_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--version", help="model version to promote")
    group.add_argument("--alias", default=None, help="promote the version behind this alias (default: challenger)")
    p.add_argument("--force", action="store_true",
                   help="promote although its gate was made against another champion (needs --reason)")
    p.add_argument("--reason", help="why (recorded on the version; required with --force)")


def _promote(args: argparse.Namespace) -> Any:
    from components.ops import promote

    return promote.promote(_params(args), args.version, args.alias, force=args.force, reason=args.reason)


def _rollback_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--reason", help="why (recorded on the version rolled back to)")


def _rollback(args: argparse.Namespace) -> Any:
    from components.ops import promote

    return promote.rollback(_params(args), reason=args.reason)


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a path "
                        "(default: models:/<registry.model_name>@champion)")


def _load_bundle(args: argparse.Namespace):
    from components.core.registry import registry, tracking

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
    """Prints the summary (JSON) and one line on stderr; exit 0 when every input got a prediction, 4 when
    none did, 7 when some did not (``serving.predict.outcome``)."""
    from serving import predict

    limits = predict.limits_for(_params(args).validate_)  # validate's limits, serve's byte limit per file
    summary = predict.run(_load_bundle(args), args.input, args.output, args.root, args.batch_size, limits=limits)
    code, line = predict.outcome(summary)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    print(f"cxr predict: {line}", file=sys.stderr)
    return code


def _serve_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _model_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--follow-alias", metavar="ALIAS",
                   help="serve models:/<registry.model_name>@ALIAS and hot-swap the model when the alias moves")
    p.add_argument("--poll-seconds", type=float, default=30.0, help="how often --follow-alias asks the registry")
    p.add_argument("--prediction-log", metavar="DIR",
                   help="append every prediction (no pixels) to rotating JSONL files here "
                        "(default: $CXR_PREDICTION_LOG; "
                        "off when neither is set)")


def _serve(args: argparse.Namespace) -> Any:
    from serving import app
    from serving.predlog import PredictionLog

    if args.follow_alias:
        from components.core.contract.errors import CxrError

        name = _params(args).registry.model_name
        if args.model and args.model != f"models:/{name}@{args.follow_alias}":
            raise CxrError(f"--follow-alias {args.follow_alias} serves models:/{name}@{args.follow_alias}: "
                           f"drop --model {args.model}")
        args.model = f"models:/{name}@{args.follow_alias}"
    bundle = _load_bundle(args)  # refuses to start when the model cannot be loaded
    app.serve(bundle, args.host, args.port, app.Settings.from_env(_params(args).validate_),
              follow_alias=args.follow_alias, poll_seconds=args.poll_seconds,
              prediction_log=PredictionLog.from_env(args.prediction_log))
    return 0


# ---------------------------------------------------------------- recipes
def _recipe_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="the named recipes (components/recipes/*.yaml)")
    s = sub.add_parser("show", help="a recipe's overlay, notes, and the warnings of the params it would give")
    s.add_argument("name")
    s.add_argument("--params", default="params.yaml", help="the file it would be applied to (default: params.yaml)")
    a = sub.add_parser("apply", help="lay recipes over params.yaml (comments kept; validated before writing); "
                                     "dvc repro, dvc exp run and cxr pipeline compile then use them")
    a.add_argument("names", nargs="+", metavar="NAME", help="one or more recipes, later ones win")
    a.add_argument("--params", default="params.yaml", help="parameters file to rewrite (default: params.yaml)")
    a.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="also " + SET_HELP.replace(" for this run", " (written into the file)")
                   .replace("train.image_size=64", "data.source=kaggle"))
    a.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")


def _recipe(args: argparse.Namespace) -> Any:
    from components.core.contract import recipes

    if args.recipe_command == "list":
        return recipes.listing()
    if args.recipe_command == "show":
        return recipes.show(args.name, args.params)
    from components.core.contract.params.overrides import parse_set

    return recipes.apply(args.names, args.params, parse_set(args.set), dry_run=args.dry_run)


# ---------------------------------------------------------------- Kubeflow Pipelines
def _pipeline_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    c = sub.add_parser("compile", help="write the KFP v2 pipeline spec (defaults from params.yaml)")
    c.add_argument("--params", default="params.yaml")
    c.add_argument("--output", default="pipelines/compiled/cxr_training.yaml")
    c.add_argument("--image", help="project image the tasks run in (default: the published GPU image)")
    c.add_argument("--tracking-uri", help="MLflow URI inside the cluster")
    c.add_argument("--gpus", type=int, help="GPUs for the train task (default 1; per worker with --train-workers)")
    c.add_argument("--train-workers", type=int,
                   help="compile the train task as a Kubeflow Trainer TrainJob launcher when > 1 (default: "
                        "train.workers of --params)")
    c.add_argument("--monitor-output", default="pipelines/compiled/cxr_monitor.yaml",
                   help="where the one-task cxr-monitor pipeline goes (empty: not compiled)")
    c.add_argument("--prediction-log-pvc", help="the monitor task mounts this PVC (default cxr-prediction-log)")
    r = sub.add_parser("run-local", help="run the whole pipeline with kfp.local in this environment")
    r.add_argument("--params", default="params.yaml")
    r.add_argument("--root", default=".cxr/kfp-local", help="pipeline root: outputs and the local cache")
    r.add_argument("--no-cache", action="store_true")
    r.add_argument("--data-uri", default="", help="dvc://<git-url>@<rev>: ingest what that commit pins")
    r.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                   help="subprocess: the tasks run in this environment (default); docker: each task in a container "
                        "of --image, with an MLflow server from --mlflow-image on a Docker network of the run's own")
    r.add_argument("--image", help="with --runner docker: the CPU image (default: this checkout's `cxr image build "
                                   "cpu` tag)")
    r.add_argument("--mlflow-image", help="with --runner docker: the MLflow server image (default: this checkout's "
                                          "`cxr image build mlflow` tag)")
    r.add_argument("--tracking-uri", help="an MLflow server the tasks use instead (with docker: the containers use "
                                          "this machine's network, so 127.0.0.1 works)")
    r.add_argument("--monitor", action="store_true",
                   help="the cxr-monitor pipeline instead, on the prediction log in --log (reports; submits nothing)")
    r.add_argument("--log", metavar="DIR", help="with --monitor: the prediction log folder")
    r.add_argument("--model", default="", help="with --monitor: the reference model (default: the champion)")
    for name, text in (("submit", "start a run on a Kubeflow Pipelines server"),
                       ("schedule", "create or replace a recurring run (idempotent by --name)")):
        q = sub.add_parser(name, help=text)
        q.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
        q.add_argument("--package", default=None,
                       help="compiled pipeline (default: pipelines/compiled/cxr_training.yaml, or cxr_monitor.yaml "
                            "with --monitor)")
        q.add_argument("--experiment", default="cxr")
        q.add_argument("--data-uri", default="", help="dvc://<git-url>@<rev>")
        q.add_argument("--monitor", action="store_true",
                       help="the cxr-monitor pipeline (prediction-log drift; submits cxr-training when due)")
        if name == "schedule":
            q.add_argument("--cron", default=None,
                           help="5-field cron (default: Mondays 03:00; hourly with --monitor)")
            q.add_argument("--name", default=None,
                           help="default: cxr-training-weekly (cxr-monitor-hourly with --monitor)")


def _pipeline(args: argparse.Namespace) -> Any:
    from pipelines import client, ops

    action = args.pipeline_command
    if action == "compile":
        cfg = ops.cluster_config(image=args.image, tracking_uri=args.tracking_uri, gpus=args.gpus,
                                 prediction_log_pvc=args.prediction_log_pvc, train_workers=args.train_workers)
        out = ops.compile_pipeline(args.output, args.params, cfg)
        if args.monitor_output:
            out["monitor"] = ops.compile_monitor_pipeline(args.monitor_output, args.params, cfg)
        return out
    if action == "run-local":
        extra = {"data_uri": args.data_uri} if args.data_uri else None
        image = mlflow_image = None
        if args.runner == "docker":
            from cxr import image as images

            image = args.image or images.local_tag("cpu")
            mlflow_image = None if args.tracking_uri else (args.mlflow_image or images.local_tag("mlflow"))
        if args.monitor:
            if not args.log:
                from components.core.contract.errors import CxrError

                raise CxrError("--monitor needs --log DIR (the prediction log `cxr serve --prediction-log` writes)")
            return ops.run_local_monitor(args.log, args.params, args.model, args.root, runner=args.runner,
                                         image=image, mlflow_image=mlflow_image, tracking_uri=args.tracking_uri)
        return ops.run_local(args.params, args.root, cache=not args.no_cache, arguments=extra, runner=args.runner,
                             image=image, mlflow_image=mlflow_image, tracking_uri=args.tracking_uri)
    extra = {"data_uri": args.data_uri} if args.data_uri and not args.monitor else None
    package = args.package or (ops.MONITOR_COMPILED if args.monitor else ops.COMPILED)
    if action == "submit":
        return client.submit(args.host, package, args.experiment, arguments=extra)
    cron = args.cron or ("0 * * * *" if args.monitor else "0 3 * * 1")
    name = args.name or ("cxr-monitor-hourly" if args.monitor else "cxr-training-weekly")
    return client.schedule(args.host, cron, name, package, args.experiment, arguments=extra)


# ---------------------------------------------------------------- images
def _image_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    for name, text in (("build", "build an image; prints its tag (lock hash + code hash)"),
                       ("tag", "print the tag `build` would give, without building")):
        q = sub.add_parser(name, help=text)
        q.add_argument("name", choices=("cpu", "mlflow", "gpu"), metavar="NAME", help="cpu, mlflow or gpu")
        q.add_argument("--offline", action="store_true",
                       help="no registry, no network in the build: the base from Debian packages "
                            "(infra/docker/make-base.sh) and the cached wheelhouse")
        q.add_argument("--base", metavar="IMAGE", help="the base image (default: python:3.11-slim-bookworm; "
                                                       "with --offline the make-base.sh image)")


def _image(args: argparse.Namespace) -> Any:
    from cxr import image

    if args.image_command == "tag":
        print(image.plan(args.name, args.offline, args.base).tag)
        return 0
    result = image.build(args.name, args.offline, args.base)
    print(json.dumps(result, sort_keys=True), file=sys.stderr)
    print(result["image"])
    return 0


# ---------------------------------------------------------------- the loop: monitor, deploy
def _monitor_args(p: argparse.ArgumentParser) -> None:
    from components.ops import monitor

    _add_spec_args(p, monitor.SPEC)
    p.add_argument("--kfp-host", default="", help="submit the training pipeline here when retraining is due "
                                                  "(default: only report it)")
    p.add_argument("--package", default="pipelines/compiled/cxr_training.yaml", help="the training pipeline to submit")
    p.add_argument("--experiment", default="cxr")


def _monitor(args: argparse.Namespace) -> Any:
    import time

    from components.ops import monitor

    trigger = None
    if args.kfp_host:
        from pipelines import client

        def trigger(summary: dict) -> dict:
            import contextlib

            with contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links: keep stdout for the JSON
                return client.submit(args.kfp_host, args.package, args.experiment,
                                  run_name=f"cxr-training-retrain-{int(time.time())}")

    kwargs = {x.name: getattr(args, x.name) for x in (*monitor.SPEC.ports, *monitor.SPEC.options)}
    summary = monitor.run(_params(args), trigger=trigger, **kwargs)
    return {k: summary[k] for k in ("verdict", "reasons", "predictions", "feedback", "retraining", "model", "window")
            } | {"report": f"{args.out}/report.html"}


def _deploy_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--version", help="registered version to deploy (refused unless it passed its gate)")
    group.add_argument("--alias", default=None, help="deploy the version behind this alias (default: champion)")
    p.add_argument("--target", choices=("kserve", "deployment"), default="kserve",
                   help="KServe InferenceService (canaryTrafficPercent) or two plain Deployments (default: kserve)")
    p.add_argument("--namespace", default="cxr-mlops")
    p.add_argument("--name", default="cxr-serve", help="the InferenceService / stable Deployment (default: cxr-serve)")
    p.add_argument("--canary-percent", type=int, help="canary share of traffic (monitor.canary.traffic_percent)")
    p.add_argument("--analysis-seconds", type=float, help="watch the canary this long (monitor.canary.*)")
    p.add_argument("--interval", type=float, default=15.0, help="seconds between two metric reads (default 15)")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for the canary's pods")
    p.add_argument("--prometheus", help="Prometheus HTTP API URL for the canary's metrics")
    p.add_argument("--metrics-url", action="append", help="or the canary pods' /metrics URL (repeatable)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: ~/.kube/config, or the pod's service account)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--dry-run", action="store_true", help="print the first patch, change nothing")


def _deploy(args: argparse.Namespace) -> Any:
    from components.ops import deploy

    params = _params(args)
    c = params.monitor.canary
    policy = deploy.Policy(args.canary_percent or c.traffic_percent, args.analysis_seconds or c.analysis_seconds,
                           c.max_error_rate, c.max_ood_rate, c.min_requests, args.interval, args.ready_timeout)
    result = deploy.deploy(params, version=args.version, alias=args.alias, target=args.target,
                           namespace=args.namespace, name=args.name, policy=policy,
                           source=deploy.metrics_source(args.prometheus, args.metrics_url),
                           kubeconfig=args.kubeconfig, context=args.context, dry_run=args.dry_run)
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 6 if result["status"] == "rolled-back" else 0  # 6: refused (the canary failed its analysis)


# ---------------------------------------------------------------- weights
def _convert_weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet34", choices=("resnet34",),
                   help="the torchvision network (default resnet34)")
    p.add_argument("--state-dict", required=True, metavar="FILE",
                   help="torchvision's state dict: a .pth (needs PyTorch) or an .npz of its arrays by name, e.g. "
                        "resnet34-b627a593.pth (the ImageNet weights fastai uses)")
    p.add_argument("--out", default=None, metavar="FILE.weights.h5",
                   help="where the Keras weights go (default: the Keras cache, where train.weights: imagenet looks)")


def _convert_weights(args: argparse.Namespace) -> Any:
    from components.core.model import resnet

    return resnet.convert(args.state_dict, args.out)


TOOLS: list[tuple[str, str, AddArgs, Handler]] = [
    ("convert-weights", "torchvision ImageNet weights → a Keras weights file (resnet34: seed 2's starting point)",
     _convert_weights_args, _convert_weights),
    ("promote", "make a gated version the champion (the old one becomes previous-champion); refuses a stale gate",
     _promote_args, _promote),
    ("rollback", "swap champion and previous-champion (recorded)", _rollback_args, _rollback),
    ("predict", "batch prediction for an image, a folder or a CSV → preds.csv", _predict_args, _predict),
    ("serve", "REST API + web page for a registered model (POST /predict, /health, /model, /)",
     _serve_args, _serve),
    ("deploy", "roll a registered version out on the cluster behind a canary; roll back on bad canary metrics",
     _deploy_args, _deploy),
    ("monitor", "compare the prediction log with the training reference (OOD rate, drift, live accuracy); "
     "submit retraining when due", _monitor_args, _monitor),
    ("pipeline", "Kubeflow Pipelines: compile | run-local | submit | schedule", _pipeline_args, _pipeline),
    ("image", "container images: build NAME [--offline] [--base IMAGE] | tag NAME (cpu, mlflow, gpu)", _image_args,
     _image),
    ("spec", "the step specs: sync | check | show (dvc.yaml and the KFP tasks are generated from them)",
     _spec_args, _spec),
    ("recipe", "named training recipes: list | show NAME | apply NAME… (rewrites params.yaml)", _recipe_args,
     _recipe),
]


def commands() -> list[tuple[str, str, AddArgs, Handler]]:
    """Every subcommand: the pipeline steps (derived from their specs), then the tools."""
    from components import catalog

    return [_step_command(s) for s in catalog.specs()] + TOOLS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr",
        description="cxr-mlops: chest X-ray classifier pipeline (DVC, Great Expectations, Keras, MLflow, KFP). "
                    "Exit codes: 0 ok, 1 internal error, 2 usage, 3 bad params, 4 bad data/input, "
                    "5 service unavailable, 6 refused (failed gate with --strict, stale promotion), "
                    "7 partial (cxr predict: some inputs refused), 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, add_args, handler in commands():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from components.core.contract import logs
    from components.core.contract.errors import EXIT_INTERRUPTED, CxrError

    logs.configure()
    try:
        result = args.handler(args)
    except CxrError as err:
        print(f"cxr {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"cxr {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(result, int):
        return result
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
