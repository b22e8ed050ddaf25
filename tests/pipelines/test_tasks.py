"""The task table: which earlier output feeds each input (what the hand-written pipeline is checked against)."""

import pytest

from components.core.contract.spec import Port, StepSpec
from pipelines import tasks


def test_kfp_inputs_are_fed_by_the_outputs_that_contain_them():
    wires = tasks.wiring(tasks.task_specs())
    assert wires[("split", "manifest")] == ("validate", "out", "manifest.csv", "Dataset")
    assert wires[("register", "validation")] == ("validate", "reports", "summary.json", "Dataset")
    assert wires[("evaluate", "model_dir")][:2] == ("train", "out") and wires[("evaluate", "model_dir")][3] == "Model"
    assert wires[("gate", "images")][:2] == ("ingest", "out")


def test_an_input_no_earlier_step_produces_is_an_error():
    first = StepSpec("a", "a", ("data",), outputs=(Port("out", "data/a"),))
    second = StepSpec("b", "b", ("data",), inputs=(Port("x", "data/elsewhere/x.csv", kind="file"),))
    with pytest.raises(ValueError, match=r"b\.x \(data/elsewhere/x\.csv\): no earlier pipeline step produces it"):
        tasks.wiring([(first, tasks.Task("a")), (second, tasks.Task("b"))])
