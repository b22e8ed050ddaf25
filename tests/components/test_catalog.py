"""The step list is stated once (components/catalog.py STEP_MODULES): the import-linter layer of the steps and the
KFP task table follow it."""

import configparser
from pathlib import Path

from components import catalog

ROOT = Path(__file__).resolve().parents[2]


def test_the_importlinter_step_layer_is_the_catalog():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    layers = [line.strip() for line in cfg["importlinter:contract:layers"]["layers"].strip().splitlines()]
    steps = [m.strip().removeprefix("components.") for m in layers[3].split("|")]
    assert steps == list(catalog.STEP_MODULES), "keep .importlinter's step layer in the catalog's order"


def test_the_kfp_tasks_are_the_catalog_steps_in_order():
    from pipelines.tasks import TASKS

    tasks = [t.step for t in TASKS]
    in_pipeline = [s.name for s in catalog.specs() if s.name in tasks]
    assert tasks == in_pipeline, "pipelines/tasks.py must list the steps in the catalog's order"
    # registry-state exists for DVC only (KFP never caches the gate); lr-find is a tool run by hand
    assert [s.name for s in catalog.specs() if s.name not in tasks] == ["registry-state", "lr-find"]
