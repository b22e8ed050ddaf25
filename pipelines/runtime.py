"""What a KFP task runs: the step's ``run()`` with params rebuilt from the task's sections and the
artifact paths mapped to the step's inputs and outputs, as its spec declares them.

The components (``pipelines/components.py``) call :func:`run_task` with their arguments; what differs between
steps (UI outputs, returned bool, options built from paths, the TrainJob launcher) comes from the step's entry
in ``pipelines/tasks.py``, never from its name. Logging is configured once per task (JSON lines when
``CXR_LOG_FORMAT=json``, as the cluster tasks set it; timestamped text otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def step_arguments(step: str, args: dict, phase: str = "") -> tuple[Any, dict[str, Any]]:
    """(params, keyword arguments of ``run()``) for a task's arguments; ``phase``: ``partition`` (inputs and
    the part's folder) or ``merge`` (the merge's inputs, the parts' folders, the outputs) of a partitioned step."""
    from components import catalog
    from components.core.contract.config import parse_params
    from pipelines.components import task_specs, wiring
    from pipelines.tasks import task as task_entry

    spec, task = catalog.spec(step), task_entry(step)
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
    for name in task.pipeline_params:
        kwargs[name] = args[name]
    for name, template in task.templates:
        kwargs[name] = template.format(**{p.name: args[p.name].path for p in spec.outputs})
    return params, kwargs


def run_task(step: str, args: dict, phase: str = "") -> str | bool:
    """Run ``step`` inside a KFP task; return its summary as JSON, or the bool its task entry ``returns``.
    ``phase``: ``partition`` runs one part of a partitioned step (``run_partition``), ``merge`` its merge."""
    from components import catalog
    from components.core.contract import logs
    from pipelines.tasks import task as task_entry

    logs.configure()
    spec, task = catalog.spec(step), task_entry(step)
    params, kwargs = step_arguments(step, args, phase)
    module = catalog.module(step)
    if phase == "partition":
        return json.dumps(module.run_partition(params, **kwargs), default=str)
    summary = None
    if task.launcher == "trainjob" and params.train.workers > 1:
        from pipelines import trainjob

        cfg = trainjob.TrainJobConfig.from_env()
        if cfg is not None:  # compiled for several workers: a Kubeflow Trainer TrainJob does the training
            summary = trainjob.run(params, kwargs["shards"], kwargs["out"], kwargs["state"], True, cfg)
    if summary is None:
        summary = (module.merge if phase == "merge" else module.run)(params, **kwargs)
    for view in task.views:
        view.fill(summary, kwargs, args[view.name])
    if task.metadata is not None and spec.outputs:
        args[spec.outputs[0].name].metadata.update(task.metadata(summary))
    if task.returns:
        return bool(summary[task.returns])
    return json.dumps(summary, default=str)
