"""The KFP components (pipelines/components/) and the pipeline's wiring (pipelines/pipeline.py) are written by
hand; the step specs and the task table stay the contract. These tests check the hand-written code against them:
each component's signature, docstring and body, and which output feeds each input of the compiled pipeline."""
# the components spell an artifact list Input[List[Dataset]], as KFP's docs do
# ruff: noqa: UP006, UP035

import ast
import inspect
import textwrap
from pathlib import Path
from typing import List

import kfp.dsl
import pytest
import yaml
from kfp.dsl import Dataset, Input, Output

from pipelines import components, ops
from pipelines.pipeline import default_arguments
from pipelines.tasks import task_specs, wiring

ROOT = Path(__file__).resolve().parents[2]
PAIRS = task_specs()
WIRES = wiring(PAIRS)
# (step, phase): phase "" for a plain step, "partition" and "merge" for a partitioned one
COMPONENTS = [(s.name, ph) for s, _ in PAIRS for ph in (("partition", "merge") if s.partitioned else ("",))]


def func_name(step: str, phase: str) -> str:
    return step.replace("-", "_") + ("_partition" if phase == "partition" else "")


def expected_signature(step: str, phase: str) -> tuple[list[tuple[str, object]], type]:
    """(parameters with their annotations, return annotation) that the specs and the task table give."""
    spec, task = next((s, t) for s, t in PAIRS if s.name == step)
    params: list[tuple[str, object]] = [(s, dict) for s in spec.sections]
    options = {o.name: o for o in spec.options}
    assert set(task.pipeline_params) <= set(options), f"{step}: pipeline_params must be options of its spec"
    params += [(n, options[n].type) for n in options if n in task.pipeline_params]
    inputs = spec.partitioned.merge_ports(spec.inputs) if phase == "merge" else spec.inputs
    params += [(p.name, Input[getattr(kfp.dsl, WIRES[(step, p.name)][3])]) for p in inputs]
    if phase == "partition":
        return [*params, ("part", int), ("partial", Output[Dataset])], str
    if phase == "merge":
        params.append(("partials", Input[List[Dataset]]))
    params += [(p.name, Output[getattr(kfp.dsl, task.artifact(p.name))]) for p in spec.outputs]
    params += [(v.name, Output[getattr(kfp.dsl, v.artifact)]) for v in task.views]
    return params, bool if task.returns else str


def args_doc(func) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring: name → its text (continuation lines joined)."""
    doc = inspect.getdoc(func) or ""
    assert "\nArgs:\n" in doc, f"{func.__name__}: no Args: section in its docstring"
    out: dict[str, str] = {}
    for line in doc.split("\nArgs:\n", 1)[1].split("\n\n", 1)[0].splitlines():
        if line.startswith("    ") and not line.startswith("     "):
            name, _, text = line.strip().partition(": ")
            out[name] = text
        else:
            out[name] += " " + line.strip()
    return out


@pytest.mark.parametrize(("step", "phase"), COMPONENTS, ids=[f"{s}{'-' + p if p else ''}" for s, p in COMPONENTS])
def test_each_component_agrees_with_its_spec_and_task_entry(step, phase):
    func = getattr(components, func_name(step, phase))
    spec = next(s for s, _ in PAIRS if s.name == step)
    assert func.__name__ == func_name(step, phase)
    assert Path(inspect.getsourcefile(func)) == ROOT / "pipelines" / "components" / f"{spec.name.replace('-', '_')}.py"
    signature = inspect.signature(func)
    params, returns = expected_signature(step, phase)
    actual = [(n, p.annotation) for n, p in signature.parameters.items()]
    assert actual == params, f"{func.__name__}: the parameters the spec and the task table give are {params}"
    assert signature.return_annotation is returns
    assert all(p.default is inspect.Parameter.empty for p in signature.parameters.values())

    doc = args_doc(func)
    assert list(doc) == [n for n, _ in params], f"{func.__name__}: the Args: section must name every parameter"
    for section in spec.sections:
        keys = [p.split(".", 1)[1] for p in spec.params if p.startswith(section + ".")]
        says = f"(reads {', '.join(keys)})" if keys else "(the whole section)"
        assert says in doc[section], f"{func.__name__}: Args: {section} must say {says}, as the spec declares"

    # the body hands every argument to the runtime, under the step's name (and its phase)
    body = ast.parse(textwrap.dedent(inspect.getsource(func))).body[0].body
    call = body[-1].value
    assert isinstance(body[-1], ast.Return) and call.func.id == "run_task", func.__name__
    assert ast.literal_eval(call.args[0]) == step and ast.unparse(call.args[1]) == "locals()"
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == ({"phase": phase} if phase else {})


def test_every_component_is_a_step_of_the_pipeline():
    names = {func_name(s, p) for s, p in COMPONENTS} | {"partitions"}
    assert set(components.__all__) == names
    modules = {f.stem for f in (ROOT / "pipelines" / "components").glob("*.py")} - {"__init__"}
    assert modules == {s.name.replace("-", "_") for s, _ in PAIRS} | {"partitions"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled") / "cxr_training.yaml"
    ops.compile_pipeline(out, ROOT / "params.yaml")
    return next(yaml.safe_load_all(out.read_text()))


def component_tasks(pipeline: dict) -> dict[str, tuple[dict, list[dict]]]:
    """Every component task of a compiled pipeline: name → (each input → its source, the groups it sits in).

    A source is ``("pipeline", parameter)``, ``(task, output)``, ``("collected", task, output)`` (a ParallelFor's
    outputs) or ``("item", task, output)`` (the loop variable of a ParallelFor over that output)."""
    out: dict[str, tuple[dict, list[dict]]] = {}

    def source(ref: dict, outer) -> tuple:
        if "componentInputParameter" in ref or "componentInputArtifact" in ref:
            return outer(ref.get("componentInputParameter") or ref["componentInputArtifact"])
        produced = ref.get("taskOutputArtifact") or ref["taskOutputParameter"]
        task, key = produced["producerTask"], produced.get("outputArtifactKey") or produced["outputParameterKey"]
        group = pipeline["components"][groups_by_task[task]]
        if "dag" in group:  # a ParallelFor's collected outputs
            (selector,) = group["dag"]["outputs"]["artifacts"][key]["artifactSelectors"]
            return "collected", selector["producerSubtask"], selector["outputArtifactKey"]
        return task, key

    def walk(tasks: dict, outer, groups: list[dict]) -> None:
        for name, task in tasks.items():
            groups_by_task[name] = task["componentRef"]["name"]
        for name, task in tasks.items():
            inputs = {k: source(v, outer) for kind in ("artifacts", "parameters")
                      for k, v in task.get("inputs", {}).get(kind, {}).items()}
            component = pipeline["components"][task["componentRef"]["name"]]
            if "dag" not in component:
                out[name] = inputs, groups
                continue
            item = task.get("parameterIterator", {})

            def inner(channel, inputs=inputs, item=item):
                if channel == item.get("itemInput"):
                    return "item", *inputs[item["items"]["inputParameter"]]
                return inputs[channel]

            walk(component["dag"]["tasks"], inner, [*groups, task])

    groups_by_task: dict[str, str] = {}
    walk(pipeline["root"]["dag"]["tasks"], lambda name: ("pipeline", name), [])
    return out


def test_the_pipeline_feeds_each_input_from_the_output_that_holds_it(compiled):
    """Each task's inputs come from where the specs say (wiring(): the output whose default path holds the input),
    its params sections and options from the pipeline parameters of the same names; a task with ``when`` in its
    entry runs under a dsl.If on that task's bool; nothing else."""
    tasks = component_tasks(compiled)
    assert set(tasks) == {f"{s}-partition" if p == "partition" else s for s, p in COMPONENTS} | {"partitions"}
    assert tasks["partitions"][0] == {"scale": ("pipeline", "scale")}
    assert set(compiled["root"]["inputDefinitions"]["parameters"]) == \
        set(default_arguments(ROOT / "params.yaml")) | {"data_uri", "label_overrides"}
    for step, phase in COMPONENTS:
        name = f"{step}-partition" if phase == "partition" else step
        inputs, groups = tasks[name]
        params, _ = expected_signature(step, phase)
        want = {}
        for param, annotation in params:
            if annotation in (dict, str):
                want[param] = ("pipeline", param)
            elif (step, param) in WIRES:
                want[param] = WIRES[(step, param)][:2]
        if phase == "partition":
            want["part"] = ("item", "partitions", "Output")
        if phase == "merge":
            want["partials"] = ("collected", f"{step}-partition", "partial")
        assert inputs == want, f"task {name}"
        when = next(t for s, t in PAIRS if s.name == step).when
        conditions = [g for g in groups if "triggerPolicy" in g]
        if when is None:
            assert not conditions, f"task {name} runs under a condition its task entry does not state"
            continue
        (cond,) = conditions
        assert cond["triggerPolicy"]["condition"] == \
            f"inputs.parameter_values['pipelinechannel--{when}-Output'] == true"
        assert cond["inputs"]["parameters"][f"pipelinechannel--{when}-Output"]["taskOutputParameter"] == \
            {"outputParameterKey": "Output", "producerTask": when}
