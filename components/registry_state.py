"""Registry state: the current champion of ``registry.model_name``, written to a small JSON file.

DVC cannot see the MLflow registry. This stage runs on every ``dvc repro`` (``always_changed``)
and rewrites ``reports/registry_state.json`` only with what a gate decision depends on (the model
name and the champion's version and run); the gate depends on that file, so promoting or rolling
back a champion re-runs the gate, and nothing else does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from components.core.contract.params_view import under_spec
from components.core.contract.spec import Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="registry-state",
    help="record the registry's current champion (DVC re-gates when it changes)",
    params=("registry", "mlflow"),
    outputs=(Port("out", "reports/registry_state.json", "model name and champion version", kind="file",
                  dvc=((".", "uncached"),)),),
    always_changed=True,
    cache=False,
    kfp=False,
)


@under_spec(SPEC)
def run(params, out: str | Path) -> dict:
    """Write the champion of ``registry.model_name`` (or none) to ``out``."""
    from components.core.contract.fsutil import read_json, write_json
    from components.core.registry import registry, tracking

    tracking.setup(params)
    name = params.registry.model_name
    mv = registry.version_by_alias(name, registry.CHAMPION)
    state = {"model_name": name, "champion": None if mv is None else {"version": str(mv.version), "run_id": mv.run_id}}
    out = Path(out)
    if not out.is_file() or read_json(out) != state:  # unchanged content keeps the file's hash (and the gate)
        write_json(out, state)
    log.info("champion of %s: %s", name, state["champion"] or "none")
    return state
