"""What a KFP task runs: the step's ``run()`` with params rebuilt from the task's sections and the
artifact paths mapped to the step's inputs and outputs, as its spec declares them.

The components (``pipelines/components/``) call :func:`run_task` with their arguments; what differs between
steps (UI outputs, returned bool, options built from paths, the TrainJob launcher) comes from the step's entry
in ``pipelines/tasks.py``, never from its name. Logging is configured once per task (JSON lines when
``CXR_LOG_FORMAT=json``, as the cluster tasks set it; timestamped text otherwise).

**Retries: only what can be transient.** KFP 2.17's retry policy (``set_retry``) has a count and a back-off and
nothing else: locally and on the cluster (an Argo ``retryStrategy`` with ``limit`` and ``backoff`` only) it re-runs
*every* failure, a usage or params error too. So the compiled pipeline asks KFP for no retries, and the task
retries itself: the step runs in a child process that this one supervises. Exit 5 (a service did not answer)
and a SIGKILL of the child (the kernel's OOM killer) are retried with back-off, up to the task
entry's ``retries`` (``pipelines/tasks.py``); any other code (2 usage, 3 params, 4 data, 6 refused, 1 a bug)
fails the task at once, and the task's container exits with the step's own code. An evicted pod is gone with its
supervisor: KFP cannot retry that alone without retrying everything, so an eviction fails the run (re-submit;
the cached steps are not run again).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRANSIENT = {5: "service unavailable (exit 5)", -signal.SIGKILL: "killed by SIGKILL (out of memory?)"}


def step_arguments(step: str, args: dict, phase: str = "") -> tuple[Any, dict[str, Any]]:
    """(params, keyword arguments of ``run()``) for a task's arguments; ``phase``: ``partition`` (inputs and
    the part's folder) or ``merge`` (the merge's inputs, the parts' folders, the outputs) of a partitioned step."""
    from components import catalog
    from components.core.contract.params.schema import parse_params
    from pipelines.tasks import task as task_entry
    from pipelines.tasks import task_specs, wiring

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
    for opt in spec.options:  # what the pipelines set unlike a person typing the command (--if-enabled)
        if opt.pipeline is not None:
            kwargs[opt.name] = opt.pipeline
    for name in task.pipeline_params:
        kwargs[name] = args[name]
    for name, template in task.templates:
        kwargs[name] = template.format(**{p.name: args[p.name].path for p in spec.outputs})
    return params, kwargs


def run_task(step: str, args: dict, phase: str = "") -> str | bool:
    """Run ``step`` inside a KFP task; return its summary as JSON, or the bool its task entry ``returns``.
    ``phase``: ``partition`` runs one part of a partitioned step (``run_partition``), ``merge`` its merge.

    The step runs in a child process (:func:`supervise`); its outputs' views and metadata are filled here."""
    from components import catalog
    from components.core.contract import logs
    from pipelines.tasks import task as task_entry

    logs.configure()
    _drop_kfp_log_handler()
    spec, task = catalog.spec(step), task_entry(step)
    summary = supervise(step, args, phase, task.retries)
    if phase == "partition":
        return json.dumps(summary, default=str)
    _, kwargs = step_arguments(step, args, phase)
    for view in task.views:
        view.fill(summary, kwargs, args[view.name])
    if task.metadata is not None and spec.outputs:
        args[spec.outputs[0].name].metadata.update(task.metadata(summary))
    if task.returns:
        return bool(summary[task.returns])
    return json.dumps(summary, default=str)


def _drop_kfp_log_handler() -> None:
    """KFP's executor gives the root logger a handler of its own ("[KFP Executor …]"): with ours, every line of the
    task would be printed twice."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        fmt = getattr(handler.formatter, "_fmt", "") or ""
        if fmt.startswith("[KFP Executor"):
            root.removeHandler(handler)


def supervise(step: str, args: dict, phase: str, retries: int) -> dict:
    """Run the step in a child process; retry it only on a transient failure (:data:`TRANSIENT`), with back-off
    (``CXR_RETRY_BACKOFF_SECONDS``, default 30, doubling, at most 300). Any other failure ends this process with
    the child's exit code (``SystemExit``), which becomes the task's."""
    backoff = float(os.environ.get("CXR_RETRY_BACKOFF_SECONDS", "30"))
    with tempfile.TemporaryDirectory(prefix=f"cxr-{step}-") as tmp:
        request, result = Path(tmp) / "request.pkl", Path(tmp) / "summary.json"
        request.write_bytes(pickle.dumps((step, args, phase, str(result))))
        for attempt in range(1, retries + 2):
            code = _run_child(request)
            if code == 0:
                return json.loads(result.read_text())
            reason = TRANSIENT.get(code)
            if reason is None or attempt > retries:
                log.error("step %s failed: exit %s%s", step, code,
                          "" if reason is None else f", {reason}, after {attempt} attempts")
                raise SystemExit(code if code > 0 else 128 - code)
            delay = min(backoff * 2 ** (attempt - 1), 300.0)
            log.warning("step %s: %s (attempt %d of %d); retrying in %.0f s", step, reason, attempt, retries + 1,
                        delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _run_child(request: Path) -> int:
    """``python -m pipelines.runtime REQUEST``; SIGTERM/SIGINT to this process go to the child too."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.runtime", str(request)])
    forward = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in forward:
        signal.signal(s, lambda signum, frame: proc.send_signal(signum))
    try:
        return proc.wait()
    finally:
        for s, handler in forward.items():
            signal.signal(s, handler)


def _child(request: Path) -> int:
    """The step itself (in the child): its exit code as ``cxr`` would give it; the summary in a file."""
    from components import catalog
    from components.core.contract import logs
    from components.core.contract.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, CxrError

    logs.configure()
    step, args, phase, result = pickle.loads(request.read_bytes())
    try:
        summary = _execute(catalog, step, args, phase)
    except CxrError as err:
        log.error("%s: %s", step, err)
        return err.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        log.exception("%s: internal error", step)
        return EXIT_INTERNAL
    Path(result).write_text(json.dumps(summary, default=str))
    return 0


def _execute(catalog, step: str, args: dict, phase: str) -> dict:
    from pipelines.tasks import task as task_entry

    task = task_entry(step)
    params, kwargs = step_arguments(step, args, phase)
    module = catalog.module(step)
    if phase == "partition":
        return module.run_partition(params, **kwargs)
    if task.launcher == "trainjob":
        from pipelines import trainjob

        cfg = trainjob.TrainJobConfig.from_env()  # set when compiled for several workers
        if cfg is not None and trainjob.applies(params):  # a Kubeflow Trainer TrainJob does the step's work
            return trainjob.run(params, cfg=cfg, **kwargs)
    return (module.merge if phase == "merge" else module.run)(params, **kwargs)


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
