"""Step specs: each step declares its contract once, and the rest is derived from it.

A :class:`StepSpec` says what a step *is*: the params it reads, its inputs and outputs with their default
paths, and its cache policy. From the specs come:

* the ``cxr <step>`` subcommands (one ``--<port>`` option per input/output, defaults from here);
* ``dvc.yaml`` (``cxr spec sync`` writes it, ``cxr spec check`` and a test fail when it is stale), each
  stage depending on the source files its step's imports reach (:mod:`~components.core.contract.codedeps`);
* the KFP components and the pipeline's wiring (``pipelines/``: an input is fed by the output whose
  default path contains it), with the cluster settings of each task in ``pipelines/tasks.py``;
* the :class:`~components.core.contract.params_view.ParamsView` every step runs under, which raises when a
  step reads a param it did not declare, so a declaration cannot drift from the code.

How a step runs on a cluster (resources, GPU, secrets, retries, artifact types, UI outputs) is not part of
the contract: ``pipelines/tasks.py`` holds it, in one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DvcKind = Literal["out", "metric", "plot", "uncached"]


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
    optional: bool = False
    dvc: tuple[tuple[str, DvcKind], ...] = ((".", "out"),)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Option:
    """A CLI option that is not a tracked path (``--no-mlflow``, ``--state``, ``--source-path``).

    A ``bool`` option is a switch that flips its default (``--no-mlflow`` sets ``track`` to False).
    ``pipeline``: the value the pipelines give it (``dvc.yaml``'s cmd, the KFP task) where it differs from what a
    person typing ``cxr <step>`` gets (``--if-enabled``: the stage runs the label review only when the params
    say so, a person asking for it gets it); ``None``: the default, everywhere.
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    flag: str = ""  # default: --<name with dashes>
    pipeline: Any = None

    def pipeline_args(self) -> list[str]:
        """The option as ``dvc.yaml``'s cmd spells it (nothing when the pipelines use the default)."""
        if self.pipeline is None or self.pipeline == self.default:
            return []
        return [self.cli_flag] if self.type is bool else [self.cli_flag, str(self.pipeline)]

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
    task per part under ``dsl.ParallelFor`` and the merge as the step's task. The result does not depend on
    the number of parts (tests).
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
    # False: the result depends on state outside the repository (the MLflow registry): KFP never caches it;
    # for DVC, list that state's file in dvc_deps (the `registry-state` stage writes it)
    cache: bool = True
    # DVC runs it every time (it reads state outside the repository)
    always_changed: bool = False
    # a stage in dvc.yaml (lr-find and monitor are tools run by hand)
    dvc: bool = True
    # more DVC dependencies: data files the code reads, state files (the registry state)
    dvc_deps: tuple[str, ...] = ()
    # DVC plots this step's outputs feed (the dvc.yaml ``plots:`` entries)
    plots: tuple[dict[str, Any] | str, ...] = ()
    # the work splits into scale.partitions parts (KFP: a ParallelFor fan-out and a merge task)
    partitioned: Partitioned | None = None
    module: str = ""  # the Python module with run(); default components.<name with - as _>

    def __post_init__(self) -> None:
        names = [p.name for p in self.ports] + [o.name for o in self.options]
        clash = {n for n in names if names.count(n) > 1}
        if clash:
            raise ValueError(f"step {self.name}: port/option names {sorted(clash)} clash with each other")
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
    def ports(self) -> tuple[Port, ...]:
        return self.inputs + self.outputs

    @property
    def sections(self) -> tuple[str, ...]:
        """The params.yaml sections this step reads (in the order of params.yaml)."""
        from components.core.contract.params.sections import SECTIONS

        wanted = {p.split(".")[0] for p in self.params}
        unknown = wanted - set(SECTIONS)
        if unknown:
            raise ValueError(f"step {self.name} declares params of unknown sections {sorted(unknown)}")
        return tuple(s for s in SECTIONS if s in wanted)

    def check(self) -> None:
        """What needs the params schema (not checked at import, to keep ``cxr --help`` light): port and option
        names must not be params sections, since a KFP component takes all of them as parameters of one
        function."""
        from components.core.contract.params.sections import SECTIONS

        clash = set(SECTIONS) & {n for n in [p.name for p in self.ports] + [o.name for o in self.options]}
        if clash:
            raise ValueError(f"step {self.name}: port/option names {sorted(clash)} clash with params sections")
        _ = self.sections

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(f"step {self.name} has no input/output {name!r}")
