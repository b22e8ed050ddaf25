"""Submit and schedule compiled pipelines on a Kubeflow Pipelines server (``cxr pipeline submit|schedule``, and
the monitor task when retraining is due)."""

from __future__ import annotations

import time
from pathlib import Path

from components.core.contract.errors import CxrError, ServiceError

COMPILED = Path("pipelines/compiled/cxr_training.yaml")
PIPELINE_NAME = "cxr-training"


def _package(package: str | Path) -> str:
    if not Path(package).is_file():
        raise CxrError(f"no compiled pipeline at {package}: run `cxr pipeline compile` first (compiled pipelines "
                       "are built, not committed)")
    return str(package)


def _client(host: str):
    import kfp

    try:
        return kfp.Client(host=host)
    except Exception as err:
        raise ServiceError(f"cannot reach Kubeflow Pipelines at {host}: {type(err).__name__}: {err}") from None


def _experiment_id(client, name: str) -> str:
    try:
        return client.create_experiment(name).experiment_id  # returns the existing one when it exists
    except Exception as err:
        raise ServiceError(f"KFP experiment {name!r}: {type(err).__name__}: {str(err)[:300]}") from None


def submit(host: str, package: str | Path = COMPILED, experiment: str = "cxr", run_name: str | None = None,
           arguments: dict | None = None) -> dict:
    """Start one run of the compiled pipeline."""
    package = _package(package)
    client = _client(host)
    exp_id = _experiment_id(client, experiment)
    try:
        run = client.run_pipeline(experiment_id=exp_id, job_name=run_name or f"{PIPELINE_NAME}-{int(time.time())}",
                                  pipeline_package_path=str(package), params=arguments or {})
    except Exception as err:
        raise ServiceError(f"submitting {package} to {host} failed: {type(err).__name__}: {str(err)[:300]}") from None
    return {"host": host, "experiment_id": exp_id, "run_id": run.run_id}


def schedule(host: str, cron: str, name: str = "cxr-training-weekly", package: str | Path = COMPILED,
             experiment: str = "cxr", arguments: dict | None = None) -> dict:
    """Create or replace the recurring run called ``name``: scheduling twice never duplicates it."""
    fields = cron.split()
    if len(fields) == 5:
        cron = "0 " + cron  # KFP takes a 6-field cron with seconds first
    elif len(fields) != 6:
        raise CxrError(f"--cron {cron!r}: expected 5 fields (m h dom mon dow), e.g. '0 3 * * 1'")
    package = _package(package)
    client = _client(host)
    exp_id = _experiment_id(client, experiment)
    try:
        existing = client.list_recurring_runs(experiment_id=exp_id, page_size=200).recurring_runs or []
        replaced = [r.recurring_run_id for r in existing if r.display_name == name]
        for rid in replaced:
            client.delete_recurring_run(rid)
        rr = client.create_recurring_run(experiment_id=exp_id, job_name=name, cron_expression=cron,
                                         pipeline_package_path=str(package), params=arguments or {},
                                         max_concurrency=1, no_catchup=True, enable_caching=True)
    except Exception as err:
        raise ServiceError(f"scheduling {name!r} on {host} failed: {type(err).__name__}: {str(err)[:300]}") from None
    return {"host": host, "experiment_id": exp_id, "recurring_run_id": rr.recurring_run_id, "cron": cron,
            "replaced": replaced}
