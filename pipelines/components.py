"""The KFP components of the pipeline steps, built in memory from each step's spec and its task entry.

KFP ships a lightweight component's *source* to the container, where its executor reads the function's
signature to know which arguments are parameters, input artifacts and output artifacts. So each component
is a real function with a typed signature and an ``Args:`` docstring (the KFP UI shows it), named after the
step: its source is written here from the spec, compiled, and registered in :mod:`linecache` under a
``<cxr-task …>`` name so that ``inspect.getsource`` (what KFP calls) finds it. No generated file is committed:
:func:`source` shows what a component looks like (``cxr spec show --kfp STEP``). Every body hands its
arguments to :func:`pipelines.runtime.run_task`, which runs the same ``components.<step>.run`` as ``cxr
<step>`` and ``dvc repro``.
"""
# KFP spells artifact lists Input[List[Dataset]]
# ruff: noqa: UP006, UP035

import linecache
import textwrap
from typing import List

from components.core.contract.spec import Port, StepSpec
from pipelines.tasks import TASKS, Task

# what the shipped source may use; KFP's executor prepends the same imports in the container
_HEADER = "from typing import List\nfrom kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, " \
          "Metrics, Model, Output\n"


# no ``from __future__ import annotations`` in this module: KFP reads real annotations of partitions()
def partitions(scale: dict) -> List[int]:
    """The part numbers of a partitioned step: 0 … ``scale.partitions`` - 1 (the ParallelFor's items).

    Args:
        scale: the ``scale`` section of params.yaml (reads partitions).

    Returns:
        the part numbers.
    """
    return list(range(int(scale.get("partitions", 1))))


def task_specs() -> list[tuple[StepSpec, Task]]:
    """(spec, task) of every step of the cxr-training pipeline, in pipeline order."""
    from components import catalog

    return [(catalog.spec(t.step), t) for t in TASKS]


def wiring(pairs: list[tuple[StepSpec, Task]]) -> dict[tuple[str, str], tuple[str, str, str, str]]:
    """Which earlier task output feeds each input: ``(step, input) → (step, output, sub-path, artifact type)``.

    An input is fed by the output whose default path equals it or contains it (the longest such
    path), exactly as under DVC: ``data/validated/manifest.csv`` is ``manifest.csv`` inside
    validate's ``data/validated``.
    """
    produced: list[tuple[StepSpec, Task, Port]] = []
    out: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    for spec, task in pairs:
        for port in spec.inputs:
            found = [(ps, pt, pp) for ps, pt, pp in produced
                     if port.path == pp.path or port.path.startswith(pp.path + "/")]
            if not found:
                raise ValueError(f"{spec.name}.{port.name} ({port.path}): no earlier pipeline step produces it")
            ps, pt, pp = max(found, key=lambda t: len(t[2].path))
            out[(spec.name, port.name)] = (ps.name, pp.name, port.path[len(pp.path):].lstrip("/"), pt.artifact(pp.name))
        produced += [(spec, task, p) for p in spec.outputs]
    return out


def func_name(spec: StepSpec, phase: str = "") -> str:
    """The component's function: the step's name; ``<step>_partition`` for one part of a partitioned step."""
    return spec.name.replace("-", "_") + (f"_{phase}" if phase else "")


def _signature(spec: StepSpec, task: Task, wires: dict, phase: str) -> list[tuple[str, str]]:
    """(parameter, its Args line) of the component; ``phase="partition"``: one part of a partitioned step (a
    partitioned step's own component is its merge)."""
    out = []
    for section in spec.sections:
        keys = [p.split(".", 1)[1] for p in spec.params if p.startswith(section + ".")]
        reads = f"reads {', '.join(keys)}" if keys else "the whole section"
        out.append((f"{section}: dict", f"{section}: the ``{section}`` section of params.yaml ({reads})."))
    out += [(f"{o.name}: {o.type.__name__}", f"{o.name}: {o.help}.") for o in spec.options
            if o.name in task.pipeline_params]
    inputs = spec.inputs
    if spec.partitioned is not None and phase != "partition":
        inputs = spec.partitioned.merge_ports(spec.inputs)
    for port in inputs:
        producer, output, _, artifact = wires[(spec.name, port.name)]
        out.append((f"{port.name}: Input[{artifact}]",
                    f"{port.name}: input from {producer}.{output}: {port.help} (``{port.path}`` under DVC)."))
    if phase == "partition":
        return [*out, ("part: int", f"part: which part of ``scale.partitions`` this task does (0-based): "
                                    f"{spec.partitioned.help}."),
                ("partial: Output[Dataset]", "partial: output, this part's results (read by the merge).")]
    if spec.partitioned is not None:
        out.append(("partials: Input[List[Dataset]]",
                    "partials: every part's results, in part order (the ParallelFor's outputs, collected)."))
    out += [(f"{p.name}: Output[{task.artifact(p.name)}]", f"{p.name}: output, {p.help} (``{p.path}`` under DVC).")
            for p in spec.outputs]
    out += [(f"{v.name}: Output[{v.artifact}]", f"{v.name}: for the KFP UI, {v.help}.") for v in task.views]
    return out


def source(spec: StepSpec, task: Task, wires: dict, phase: str = "") -> str:
    """The Python source of the component for ``spec`` (what KFP ships to the container)."""
    signature = _signature(spec, task, wires, phase)
    returns = task.returns and not phase
    title = f"{spec.help[0].upper()}{spec.help[1:]}."
    if phase == "partition":
        title = f"One part of {spec.name} (``scale.partitions``): {spec.partitioned.help}."
    elif spec.partitioned is not None:
        title += " Merges the parts."
    args_doc = [w for _, d in signature
                for w in textwrap.wrap(d, 112, initial_indent=" " * 8, subsequent_indent=" " * 12)]
    call = f"run_task({spec.name!r}, locals())"
    if spec.partitioned is not None:
        call = f"run_task({spec.name!r}, locals(), phase={phase or 'merge'!r})"
    ret_doc = (f"``{task.returns}`` from the step's summary (the pipeline branches on it)." if returns
               else "the step's summary as JSON.")
    lines = [f"def {func_name(spec, phase)}(", *(f"    {p}," for p, _ in signature),
             f") -> {'bool' if returns else 'str'}:",
             *textwrap.wrap(f'"""{title}', 112, initial_indent=" " * 4, subsequent_indent=" " * 4), "",
             "    Args:", *args_doc, "", "    Returns:", f"        {ret_doc}", '    """',
             "    from pipelines.runtime import run_task", "", f"    return {call}"]
    return "\n".join(lines) + "\n"


def define(code: str, name: str):
    """The function ``name`` defined by ``code``, with its source findable by ``inspect.getsource``."""
    filename = f"<cxr-task {name}>"
    text = _HEADER + code
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    namespace: dict = {"__name__": "pipelines.components"}
    exec(compile(text, filename, "exec", dont_inherit=True), namespace)  # our own source, written above from the specs
    return namespace[name]


def functions() -> dict[str, object]:
    """Every component function by name (``partitions``, ``<step>_partition`` for partitioned steps, ``<step>``)."""
    pairs = task_specs()
    wires = wiring(pairs)
    out: dict[str, object] = {}
    for spec, task in pairs:
        if spec.partitioned is not None:
            out["partitions"] = partitions
            out[func_name(spec, "partition")] = define(source(spec, task, wires, "partition"),
                                                       func_name(spec, "partition"))
        out[func_name(spec)] = define(source(spec, task, wires), func_name(spec))
    return out
