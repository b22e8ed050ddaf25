"""Step specs: each step declares its contract once, and everything else is derived from it.

A :class:`StepSpec` names the params a step reads, its inputs and outputs with their default paths,
its cache policy and the code it depends on. From the specs:

* the ``cxr <step>`` subcommands (one ``--<port>`` option per input/output, defaults from here);
* ``dvc.yaml`` (``cxr spec sync`` writes it, ``cxr spec check`` and a test fail when it is stale);
* the KFP components in ``pipelines/tasks.py`` (generated the same way) and the pipeline's wiring
  (an input is fed by the output whose default path contains it);
* the :class:`~components.core.contract.params_view.ParamsView` every step runs under, which raises when a
  step reads a param it did not declare, so a declaration cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ArtifactType = Literal["Dataset", "Model", "HTML", "Markdown", "Metrics", "ClassificationMetrics"]
DvcKind = Literal["out", "metric", "plot", "uncached"]

# Every stage depends on its own module and on the shared core (coarse and correct beats fine and wrong).
CORE_CODE = "components/core"


@dataclass(frozen=True)
class Port:
    """An input or output path of a step.

    ``name`` is the ``run()`` keyword and the CLI option (``--name``, underscores as dashes);
    ``path`` the default, relative to the repository root, as in ``dvc.yaml``. ``dvc`` lists what
    DVC tracks under an output (sub-path, kind); the default is the whole path as an ``out``.
    """

    name: str
    path: str
    help: str = ""
    kind: Literal["dir", "file"] = "dir"
    artifact: ArtifactType = "Dataset"
    optional: bool = False
    dvc: tuple[tuple[str, DvcKind], ...] = ((".", "out"),)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Option:
    """A CLI option that is not a tracked path (``--no-mlflow``, ``--state``, ``--source-path``).

    A ``bool`` option is a switch that flips its default (``--no-mlflow`` sets ``track`` to False).
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    flag: str = ""  # default: --<name with dashes>
    # a KFP pipeline parameter of the same name feeds it (else the step's default is used in the cluster)
    pipeline_param: bool = False
    # in a KFP task: a path built from the task's output paths, e.g. "{out}-state"
    kfp_template: str = ""

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Partitioned:
    """A step whose work splits into ``scale.partitions`` independent parts and a merge.

    The step module defines ``run_partition(params, part, <inputs>, partial)``, which writes part
    ``part`` (0-based) of the work into the folder ``partial``, and ``merge(params, partials, <inputs>,
    <outputs>)``, which makes the step's outputs from every part's folder (in part order). Its ``run()``
    (``cxr``, ``dvc repro``) runs the parts one after the other, then the merge; the KFP pipeline runs one
    task per part under ``dsl.ParallelFor`` (``scale.parallelism`` at once) and the merge as the step's task,
    fed with the parts through ``dsl.Collected``. The result does not depend on the number of parts (tests).
    """

    help: str = "one part of the work"
    # the inputs merge() reads (default: all of them); a KFP task downloads every input artifact it is given,
    # so the merge of preprocess does not take the image folder
    merge_inputs: tuple[str, ...] | None = None

    def merge_ports(self, inputs: tuple[Port, ...]) -> tuple[Port, ...]:
        return inputs if self.merge_inputs is None else tuple(p for p in inputs if p.name in self.merge_inputs)


@dataclass(frozen=True)
class StepSpec:
    """The contract of one step: what it reads (params, inputs), what it writes, how it is cached."""

    name: str
    help: str
    params: tuple[str, ...]
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()
    options: tuple[Option, ...] = ()
    # extra code beyond components/<module>.py and components/core/ (e.g. a data file)
    code: tuple[str, ...] = ()
    # more DVC dependencies that are not inputs of run() (e.g. the registry state file)
    dvc_deps: tuple[str, ...] = ()
    # DVC plots this step's outputs feed (the dvc.yaml ``plots:`` entries)
    plots: tuple[dict[str, Any], ...] = ()
    # False: the result depends on state outside the repository (the MLflow registry): KFP never
    # caches it; for DVC, list that state's file in dvc_deps (the `registry-state` stage writes it)
    cache: bool = True
    # a stage in dvc.yaml / a task in the KFP pipeline (lr-find is a tool, neither)
    dvc: bool = True
    kfp: bool = True
    # DVC runs it every time (it reads state outside the repository)
    always_changed: bool = False
    # KFP: the task runs only when this step's task returned True (register runs when the gate passed)
    when: str | None = None
    # KFP: the task returns this key of run()'s summary as a bool (the gate's ``passed``), else JSON text
    returns: str | None = None
    # KFP-only outputs for the UI (HTML, Markdown, Metrics, ClassificationMetrics), filled by
    # pipelines.runtime from the step's outputs; they carry no data the next step reads
    kfp_views: tuple[Port, ...] = ()
    # KFP resources: (cpu request, cpu limit, memory request, memory limit)
    resources: tuple[str, str, str, str] = ("1", "2", "2G", "4G")
    gpu: bool = False
    secrets: tuple[Literal["mlflow", "kaggle"], ...] = ()
    retries: int = 0
    module: str = ""  # the Python module with run(); default components.<name with - as _>
    # the work splits into scale.partitions parts (KFP: a ParallelFor fan-out and a merge task)
    partitioned: Partitioned | None = None
    # "trainjob": with train.workers > 1 the KFP task runs the step as a Kubeflow Trainer TrainJob
    # (pipelines/trainjob.py) on the workers' GPUs instead of in its own pod
    launcher: Literal["", "trainjob"] = ""

    def __post_init__(self) -> None:
        from components.core.contract.params_view import SECTION_ORDER

        names = [p.name for p in (*self.ports, *self.kfp_views)] + [o.name for o in self.options]
        clash = (set(names) & set(SECTION_ORDER)) | {n for n in names if names.count(n) > 1}
        if clash:  # KFP components take sections, ports and options as parameters of one function
            raise ValueError(f"step {self.name}: port/option names {sorted(clash)} clash with each other or with "
                             "params sections")
        if self.partitioned is not None:
            reserved = {"part", "partial", "partials"} & set(names)
            if reserved:
                raise ValueError(f"step {self.name}: {sorted(reserved)} are the partitioned step's own names")
            if not any(p == "scale" or p.startswith("scale.") for p in self.params):
                raise ValueError(f"step {self.name} is partitioned: declare scale.partitions in its params")

    @property
    def module_name(self) -> str:
        return self.module or "components." + self.name.replace("-", "_")

    @property
    def module_path(self) -> str:
        return self.module_name.replace(".", "/") + ".py"

    @property
    def ports(self) -> tuple[Port, ...]:
        return self.inputs + self.outputs

    @property
    def sections(self) -> tuple[str, ...]:
        """The params.yaml sections this step reads (in the order of params.yaml)."""
        from components.core.contract.params_view import SECTION_ORDER

        wanted = {p.split(".")[0] for p in self.params}
        return tuple(s for s in SECTION_ORDER if s in wanted)

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(f"step {self.name} has no input/output {name!r}")


def _dvc_path(port: Port, sub: str) -> str:
    return port.path if sub == "." else f"{port.path}/{sub}"


def dvc_stage(spec: StepSpec) -> dict[str, Any]:
    """The ``dvc.yaml`` stage of a step: explicit paths, declared params, code deps, outs and metrics."""
    cmd = " ".join(["cxr", spec.name, *(f"{p.flag} {p.path}" for p in spec.ports)])
    stage: dict[str, Any] = {"cmd": cmd}
    deps = [p.path for p in spec.inputs] + [spec.module_path, CORE_CODE, *spec.code, *spec.dvc_deps]
    if deps:
        stage["deps"] = deps
    if spec.params:
        stage["params"] = list(spec.params)
    outs: list[Any] = []
    metrics: list[Any] = []
    for port in spec.outputs:
        for sub, kind in port.dvc:
            path = _dvc_path(port, sub)
            if kind == "out":
                outs.append(path)
            elif kind == "uncached":
                outs.append({path: {"cache": False}})
            elif kind == "metric":
                metrics.append({path: {"cache": False}})
    if outs:
        stage["outs"] = outs
    if metrics:
        stage["metrics"] = metrics
    if spec.always_changed:
        stage["always_changed"] = True
    return stage


DVC_HEADER = """\
# Generated by `cxr spec sync` from the step specs (SPEC in components/<step>.py); do not edit.
# `cxr spec check` (and a test) fails when this file is stale. Each stage calls `cxr <step>` with
# explicit paths and declares the params its step reads (the step runs under a view that refuses
# any other key), its own module and components/core/ as code. `dvc repro` runs what changed;
# `dvc exp run -S key=value` runs experiments.
"""


def dvc_yaml(specs: list[StepSpec]) -> str:
    """The whole ``dvc.yaml`` for ``specs`` (in pipeline order)."""
    import yaml

    stages = {s.name: dvc_stage(s) for s in specs if s.dvc}
    plots = [p for s in specs if s.dvc for p in s.plots]
    body = yaml.safe_dump({"stages": stages, "plots": plots}, sort_keys=False, width=1000, default_flow_style=False)
    # a blank line between stages, for people reading it
    lines = []
    for line in body.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.endswith(":") and lines and \
                lines[-1] != "stages:":
            lines.append("")
        if line == "plots:":
            lines.append("")
        lines.append(line)
    return DVC_HEADER + "\n".join(lines) + "\n"
