"""What a KFP task runs: the step's ``run()`` with params rebuilt from the task's sections and the
artifact paths mapped to the step's inputs and outputs, as its spec declares them.

The generated components (``pipelines/tasks.py``) call :func:`run_task` with their arguments.
Logging is configured once per task (JSON lines when ``CXR_LOG_FORMAT=json``, as the cluster tasks
set it; timestamped text otherwise), so a pod's log shows each step's progress as it happens.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _validate_views(summary: dict, paths: dict, args: dict) -> None:
    reports = Path(paths["reports"])
    pages = sorted((reports / "data_docs" / "validations").rglob("*.html"))
    docs = args["data_docs"].path
    Path(docs).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(pages[0] if pages else reports / "data_docs" / "index.html", docs)
    metrics = args["summary"]
    for key in ("images", "usable", "quarantined", "patients"):
        metrics.log_metric(key, summary[key])
    audit = summary["source_bias_audit"]
    if audit.get("balanced_accuracy") is not None:
        metrics.log_metric("bias_audit_balanced_accuracy", audit["balanced_accuracy"])
    _write(metrics.path, summary)


def _evaluate_views(summary: dict, paths: dict, args: dict) -> None:
    m = json.loads(Path(paths["metrics"]).read_text())
    scores = args["scores"]
    for key in ("accuracy", "macro_f1", "macro_roc_auc", "ece"):
        if m[key] is not None:
            scores.log_metric(key, m[key])
    for c, v in m["per_class"].items():
        if v["recall"] is not None:
            scores.log_metric(f"recall_{c}", v["recall"])
    _write(scores.path, m)
    args["confusion"].log_confusion_matrix(m["confusion_matrix"]["labels"], m["confusion_matrix"]["matrix"])


def _gate_views(summary: dict, paths: dict, args: dict) -> None:
    decision = args["decision"]
    decision.log_metric("passed", 1.0 if summary["passed"] else 0.0)
    decision.log_metric("failed_checks", float(len(summary.get("failed", []))))
    _write(decision.path, summary)


def _register_views(summary: dict, paths: dict, args: dict) -> None:
    card = args["model_card"].path
    Path(card).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(paths["out"]) / "model_card.md", card)


def _review_views(summary: dict, paths: dict, args: dict) -> None:
    page = args["gallery"].path
    Path(page).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(paths["out"]) / "gallery.html", page)


def _metadata(step: str, summary: dict, args: dict) -> None:
    if step == "ingest":
        args["out"].metadata["images"] = summary.get("images")
    elif step == "train":
        args["out"].metadata.update({"framework": "keras", "backbone": summary["backbone"],
                                     "image_size": summary["image_size"], "mlflow_run_id": summary["run_id"] or ""})


def _write(path: str, obj: Any) -> None:
    """A file at a Metrics artifact's path: without one the task never hits the KFP cache (DESIGN §4)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, default=str))


VIEWS: dict[str, Callable[[dict, dict, dict], None]] = {
    "validate": _validate_views, "evaluate": _evaluate_views, "gate": _gate_views, "register": _register_views,
    "review-labels": _review_views,
}


def step_arguments(step: str, args: dict, phase: str = "") -> tuple[Any, dict[str, Any]]:
    """(params, keyword arguments of ``run()``) for a task's arguments; ``phase``: ``partition`` (inputs and
    the part's folder) or ``merge`` (the merge's inputs, the parts' folders, the outputs) of a partitioned step."""
    from components import catalog
    from components.core.contract.config import parse_params
    from pipelines.codegen import task_specs, wiring

    spec = catalog.spec(step)
    params = parse_params({s: args[s] for s in spec.sections}, f"pipeline parameters of task {step}")
    wires = wiring(task_specs())
    kwargs: dict[str, Any] = {}
    inputs = spec.partitioned.merge_ports(spec.inputs) if phase == "merge" else spec.inputs
    for port in inputs:
        sub = wires[(step, port.name)][2]
        base = args[port.name].path
        kwargs[port.name] = str(Path(base) / sub) if sub else base
    if phase == "partition":
        Path(args["partial"].path).parent.mkdir(parents=True, exist_ok=True)
        return params, {"part": int(args["part"]), **kwargs, "partial": args["partial"].path}
    if phase == "merge":
        kwargs["partials"] = [a.path for a in args["partials"]]
    for port in spec.outputs:
        Path(args[port.name].path).parent.mkdir(parents=True, exist_ok=True)
        kwargs[port.name] = args[port.name].path
    for opt in spec.options:
        if opt.pipeline_param:
            kwargs[opt.name] = args[opt.name]
        elif opt.kfp_template:
            kwargs[opt.name] = opt.kfp_template.format(**{p.name: args[p.name].path for p in spec.outputs})
    return params, kwargs


def run_task(step: str, args: dict, phase: str = "") -> str | bool:
    """Run ``step`` inside a KFP task; return its summary as JSON, or the bool its spec ``returns``.
    ``phase``: ``partition`` runs one part of a partitioned step (``run_partition``), ``merge`` its merge."""
    from components import catalog
    from components.core.contract import logs

    logs.configure()
    spec = catalog.spec(step)
    params, kwargs = step_arguments(step, args, phase)
    module = catalog.module(step)
    if spec.launcher == "trainjob" and params.train.workers > 1:
        from pipelines import trainjob

        cfg = trainjob.TrainJobConfig.from_env()
        if cfg is not None:  # compiled for several workers: a Kubeflow Trainer TrainJob does the training
            summary = trainjob.run(params, kwargs["shards"], kwargs["out"], kwargs["state"], True, cfg)
            _metadata(step, summary, args)
            return json.dumps(summary, default=str)
    if phase == "partition":
        return json.dumps(module.run_partition(params, **kwargs), default=str)
    summary = (module.merge if phase == "merge" else module.run)(params, **kwargs)
    if step in VIEWS:
        VIEWS[step](summary, kwargs, args)
    _metadata(step, summary, args)
    if spec.returns:
        return bool(summary[spec.returns])
    return json.dumps(summary, default=str)
