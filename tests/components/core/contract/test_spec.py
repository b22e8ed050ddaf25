"""Step specs: dvc.yaml is current, every step runs under its params view, declarations hold, code deps are
derived from imports."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from components import catalog
from components.catalog import dvc_stage
from components.core.contract import codedeps
from components.core.contract.params_view import ParamsView, UndeclaredParamError, view
from components.core.contract.spec import Port, StepSpec
from tests.support import tiny_params, train_params

ROOT = Path(__file__).resolve().parents[4]


def test_dvc_yaml_is_not_stale():
    assert not catalog.stale(ROOT), "run `cxr spec sync` and commit dvc.yaml"


def test_every_step_runs_under_its_spec():
    for name in catalog.STEP_MODULES:
        mod = catalog.module(name)
        assert mod.run.spec is mod.SPEC, name
        assert codedeps.module_file(mod.SPEC.module_name) is not None, name


def test_view_allows_declared_keys_only():
    p = view(tiny_params(), ("data.classes", "train"), "demo-step")
    assert p.data.classes == ["COVID19", "NORMAL", "PNEUMONIA"]
    assert p.train.image_size == 224 and p.train.phases  # a declared section gives the real object
    assert isinstance(p.data, ParamsView)
    with pytest.raises(UndeclaredParamError, match=r"step demo-step reads params key 'data.source'"):
        _ = p.data.source
    with pytest.raises(UndeclaredParamError, match="'validate'"):
        _ = p.validate_
    with pytest.raises(UndeclaredParamError):
        p.section("data")
    assert p.declared_dump()["data"] == {"classes": ["COVID19", "NORMAL", "PNEUMONIA"]}
    assert set(p.declared_dump()) == {"data", "train"}


def test_an_under_declared_step_fails(tiny_shards, tmp_path, monkeypatch):
    """The guard the test suite relies on: preprocess reads train.image_size; without it, it must fail."""
    mod = catalog.module("preprocess")
    under = dataclasses.replace(mod.SPEC, params=tuple(p for p in mod.SPEC.params if p != "train.image_size"))
    monkeypatch.setattr(mod.run, "spec", under)
    splits = tiny_shards.parent / "splits"
    with pytest.raises(UndeclaredParamError, match="reads params key 'train'"):
        mod.run(train_params(), splits, tiny_shards.parent / "raw", tmp_path / "shards")
    assert not (tmp_path / "shards").exists()


def test_dvc_stage_from_a_spec():
    spec = StepSpec(name="demo-step", help="h", params=("train.image_size",),
                    inputs=(Port("src", "data/a"),),
                    outputs=(Port("out", "data/b"), Port("reports", "reports/x", dvc=(("s.json", "metric"),))),
                    dvc_deps=("reports/registry_state.json",), always_changed=True, module="components.split")
    stage = dvc_stage(spec)
    assert stage["cmd"] == "cxr demo-step --src data/a --out data/b --reports reports/x"
    assert stage["deps"][0] == "data/a" and stage["deps"][-1] == "reports/registry_state.json"
    assert "components/split.py" in stage["deps"] and "components/core/data/manifest.py" in stage["deps"]
    assert stage["outs"] == ["data/b"] and stage["metrics"] == [{"reports/x/s.json": {"cache": False}}]
    assert stage["params"] == ["train.image_size"] and stage["always_changed"] is True


def test_port_names_cannot_clash_with_sections():
    with pytest.raises(ValueError, match="gate"):
        StepSpec(name="x", help="h", params=("gate",), inputs=(Port("gate", "reports/gate.json"),)).check()
    with pytest.raises(ValueError, match="clash with each other"):
        StepSpec(name="x", help="h", params=(), inputs=(Port("a", "p"),), outputs=(Port("a", "q"),))
    catalog.check()  # the real specs hold


def test_dvc_yaml_declares_what_the_old_one_missed():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "preprocess.resize" in stages["train"]["params"]
    assert {"data.classes", "validate.max_pixels", "gate", "registry", "mlflow"} <= set(stages["gate"]["params"])
    assert "reports/registry_state.json" in stages["gate"]["deps"]
    assert {"data", "split", "train", "evaluate"} <= set(stages["register"]["params"])
    assert "components/core/data/labels.py" in stages["ingest"]["deps"]  # the label alias table
    assert stages["registry-state"]["always_changed"] is True


