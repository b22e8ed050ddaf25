"""Compile the ``cxr-training`` and ``cxr-monitor`` pipelines, and run the training pipeline locally (kfp.local).
Submitting and scheduling on a KFP server: :mod:`pipelines.client`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path

from components.core.contract.errors import CxrError
from components.core.contract.fsutil import atomic_path
from pipelines.pipeline import ClusterConfig, default_arguments, make_monitor_pipeline, make_pipeline

COMPILED = Path("pipelines/compiled/cxr_training.yaml")
MONITOR_COMPILED = Path("pipelines/compiled/cxr_monitor.yaml")
PIPELINE_NAME = "cxr-training"


def compile_pipeline(output: str | Path = COMPILED, params_path: str | Path = "params.yaml",
                     cluster: ClusterConfig | None = None) -> dict:
    """Write the pipeline spec (defaults from ``params_path``) for a cluster."""
    cluster = cluster or ClusterConfig()
    defaults = default_arguments(params_path)
    if cluster.train_workers is None:  # the TrainJob or not is part of the compiled pipeline: as params.yaml says
        cluster = dataclasses.replace(cluster, train_workers=int(defaults["train"].get("workers", 1)))
    _compile(make_pipeline(defaults, cluster), output)
    return {"output": str(output), "image": cluster.image, "tracking_uri": cluster.tracking_uri,
            "train_workers": cluster.train_workers}


def compile_monitor_pipeline(output: str | Path = MONITOR_COMPILED, params_path: str | Path = "params.yaml",
                             cluster: ClusterConfig | None = None) -> dict:
    """Write the one-task ``cxr-monitor`` pipeline spec (scheduled with ``cxr pipeline schedule --monitor``)."""
    cluster = cluster or ClusterConfig()
    _compile(make_monitor_pipeline(default_arguments(params_path), cluster), output)
    return {"output": str(output), "image": cluster.image, "prediction_log_pvc": cluster.prediction_log_pvc}


def _compile(pipeline, output: str | Path) -> None:
    from kfp import compiler

    with atomic_path(output) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp.with_suffix(".yaml")))
        text = tmp.with_suffix(".yaml").read_text()
        tmp.with_suffix(".yaml").unlink()
        # KFP's header comment lists defaults in hash order: drop it so the file is reproducible
        body = "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"
        tmp.write_text(f"# Compiled by `cxr pipeline compile` from params.yaml; do not edit.\n{body}")


def run_local(params_path: str | Path = "params.yaml", pipeline_root: str | Path = ".cxr/kfp-local",
              cache: bool = True, arguments: dict | None = None, runner: str = "subprocess", image: str | None = None,
              mlflow_image: str | None = None, tracking_uri: str | None = None) -> dict:
    """Run the whole pipeline under kfp.local: ``runner="subprocess"`` (default) in this environment with
    ``SubprocessRunner(use_venv=False)``; ``runner="docker"``: every task in a container of ``image``
    (``DockerRunner``). With Docker and no ``tracking_uri``, an MLflow server runs from ``mlflow_image`` on a
    Docker network of the run's own (its store in ``<root>/mlflow``, kept between runs) and stops afterwards;
    with a ``tracking_uri`` the containers use the host's network, so a server on this machine is reachable."""
    root = Path(pipeline_root).resolve()
    args = {**default_arguments(params_path), **(arguments or {})}
    with _local_runner(root, cache, runner, image, mlflow_image, tracking_uri) as (uri, env, info):
        return _run(make_pipeline(args, image=image, tracking_uri=uri, env=env), args, root, PIPELINE_NAME) | info


def run_local_monitor(log_dir: str | Path, params_path: str | Path = "params.yaml", model: str = "",
                      pipeline_root: str | Path = ".cxr/kfp-local", runner: str = "subprocess",
                      image: str | None = None, mlflow_image: str | None = None,
                      tracking_uri: str | None = None) -> dict:
    """Run the one-task ``cxr-monitor`` pipeline under kfp.local on the prediction log in ``log_dir`` (report
    only: it submits nothing). With Docker the log is copied under the pipeline root, the one folder kfp.local
    mounts into the task's container (a cluster mounts the log's volume instead)."""
    root = Path(pipeline_root).resolve()
    defaults = default_arguments(params_path)
    log_dir = Path(log_dir).resolve()
    if not log_dir.is_dir():
        raise CxrError(f"--log {log_dir}: no such folder (the prediction log `cxr serve --prediction-log` writes)")
    with _local_runner(root, False, runner, image, mlflow_image, tracking_uri) as (uri, env, info):
        if runner == "docker":
            import shutil

            copy = root / "outputs" / f"prediction-log-{int(time.time())}"
            shutil.copytree(log_dir, copy)
            log_dir = copy
        args = {"monitor": defaults["monitor"], "registry": defaults["registry"], "mlflow": defaults["mlflow"],
                "log_dir": str(log_dir), "model": model, "kfp_host": ""}
        pipeline = make_monitor_pipeline(defaults, image=image, tracking_uri=uri, env=env)
        return _run(pipeline, args, root, "cxr-monitor") | info


@contextlib.contextmanager
def _local_runner(root: Path, cache: bool, runner: str, image: str | None, mlflow_image: str | None,
                  tracking_uri: str | None):
    """``kfp.local.init`` for the runner; yields the tracking URI the tasks get, their extra environment and what
    the result reports about the runner. Docker without a tracking URI: an MLflow container for the run."""
    from kfp import local

    def init(runner_obj) -> None:
        local.init(runner=runner_obj, pipeline_root=str(root / "outputs"), raise_on_error=True,
                   enable_caching=cache, cache_root=str(root / "cache"))

    if runner == "subprocess":
        init(local.SubprocessRunner(use_venv=False))
        yield tracking_uri, None, {}
        return
    if runner != "docker":
        raise CxrError(f"--runner {runner!r}: expected subprocess or docker")
    from pipelines import containers

    if not image:
        raise CxrError("--runner docker needs --image TAG (the CPU image: `cxr image build cpu` prints its tag)")
    containers.require_image(image, "cxr image build cpu")
    containers.writable_by_containers(root / "outputs")
    # the host's CXR_* settings (log format, progress interval, retry back-off) reach the tasks, as on a cluster
    # their pod spec sets them
    env = {k: v for k, v in os.environ.items() if k.startswith("CXR_")}
    info = {"runner": "docker", "image": image}
    if tracking_uri:
        init(local.DockerRunner(network="host", user=containers.run_user()))
        yield tracking_uri, env, info | {"tracking_uri": tracking_uri}
        return
    if not mlflow_image:
        raise CxrError("--runner docker without --tracking-uri starts an MLflow server: give --mlflow-image TAG "
                       "(`cxr image build mlflow` prints it)")
    containers.require_image(mlflow_image, "cxr image build mlflow")
    with containers.run_network() as network:
        server = containers.MlflowContainer(mlflow_image, network, root / "mlflow")
        try:
            server.start()
            init(local.DockerRunner(network=network, user=containers.run_user()))
            yield server.uri, env, info | {"tracking_uri": server.uri, "mlflow_image": mlflow_image,
                                           "mlflow_store": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"}
        finally:
            server.stop()


def _run(pipeline, args: dict, root: Path, name: str) -> dict:
    started = time.time()
    pipeline(**args)
    runs = sorted((root / "outputs").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CxrError(f"kfp.local wrote no run folder under {root / 'outputs'}")
    run_dir = runs[-1]
    artifacts = {task.name: sorted(str(p) for p in task.iterdir())
                 for task in sorted(run_dir.iterdir()) if task.is_dir()}
    return {"run_dir": str(run_dir), "seconds": round(time.time() - started, 1), "artifacts": artifacts}


def cluster_config(**overrides) -> ClusterConfig:
    return dataclasses.replace(ClusterConfig(), **{k: v for k, v in overrides.items() if v is not None})
