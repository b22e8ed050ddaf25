"""The ``cxr-training`` pipeline: one task per step (a partitioned step: a ``dsl.ParallelFor`` fan-out of
one task per part, then its merge task), each input wired by hand to the output that holds it, and configured
from the task table (``pipelines/tasks.py``); register runs behind ``dsl.If`` on the gate's bool.
``tests/pipelines/test_components.py`` checks the wiring and the components against the step specs.

Pipeline parameters mirror ``params.yaml`` (one ``dict`` per section, defaults read from the file at
compile time) plus ``data_uri`` (``dvc://<git-url>@<rev>`` to train on exactly what a commit pins) and
``label_overrides`` (the label decisions ingest applies: the image's copy of ``data/label_overrides.csv`` when
compiled for a cluster, none for a local run).
Cluster settings: the train task asks for a GPU on tainted GPU nodes; every task has CPU/memory
requests and limits, runs as a non-root user, and gets credentials from Kubernetes Secrets.
"""

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from kfp import dsl, kubernetes
from kfp.dsl import pipeline_task

from components.core.contract.params.sections import SECTIONS

DEFAULT_IMAGE = "ghcr.io/cxr-mlops/cxr-mlops-gpu:latest"


class _CallerNameOnly:
    """``inspect`` for kfp's ``pipeline_task`` module, whose ``_ensure_container_spec_exists`` (run by every task
    setter: ``set_cpu_limit``, ``set_env_variable``, …) calls ``inspect.stack()`` only for its caller's name in an
    error message. That reads the source of every frame on the stack and, per frame, scans ``sys.modules``: in a
    process with TensorFlow loaded, under pytest, a compile took 10 s (70 setter calls); 0.2 s with this. The two
    frames it reads come from the frames alone; everything else is ``inspect``'s own."""

    def __getattr__(self, name: str):
        return getattr(inspect, name)

    @staticmethod
    def stack(context: int = 1) -> list[tuple]:
        here = sys._getframe(1)
        return [(f, "", f.f_lineno, f.f_code.co_name) for f in (here, here.f_back)]


pipeline_task.inspect = _CallerNameOnly()


@dataclass(frozen=True)
class ClusterConfig:
    """What the compiled pipeline asks of the Kubernetes cluster."""

    image: str = DEFAULT_IMAGE
    tracking_uri: str = "http://mlflow.cxr-mlops.svc.cluster.local:5000"
    gpu_type: str = "nvidia.com/gpu"
    gpus: int = 1
    gpu_node_label: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    kaggle_secret: str = "kaggle-credentials"
    mlflow_secret: str = "mlflow-credentials"
    run_as_user: int = 1000
    # the cxr-monitor pipeline: the prediction log share (ReadWriteMany, see infra/k8s/serving) and the KFP API
    prediction_log_pvc: str = "cxr-prediction-log"
    prediction_log_path: str = "/var/log/cxr/predictions"
    kfp_host: str = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    training_package: str = "/app/pipelines/compiled/cxr_training.yaml"
    # train.workers > 1: the train task creates a Kubeflow Trainer TrainJob (infra/k8s/trainer) and waits for it;
    # None: as params.yaml says when the pipeline is compiled
    train_workers: int | None = None
    trainjob_runtime: str = "cxr-tensorflow-multiworker"
    train_shared_pvc: str = "cxr-train-shared"
    train_shared_path: str = "/mnt/cxr-shared"
    # the label decisions ingest applies (pipeline parameter label_overrides): the file the images carry
    # (infra/docker copies data/label_overrides.csv to /app); "" applies none
    label_overrides: str = "/app/data/label_overrides.csv"


def default_arguments(params_path: str | Path = "params.yaml") -> dict:
    from components.core.contract.params.schema import load_params

    dumped = load_params(params_path).model_dump(mode="json", by_alias=True, exclude_none=True)
    return {s: dumped[s] for s in SECTIONS}  # None is not a protobuf value: unset keys take their defaults


def _configure(entry, task, cfg: ClusterConfig) -> None:
    """Cluster settings from the step's task entry (``entry``): resources, GPU, secrets, security, logging."""
    cpu_req, cpu_lim, mem_req, mem_lim = entry.resources
    task.set_cpu_request(cpu_req).set_cpu_limit(cpu_lim)
    task.set_memory_request(mem_req).set_memory_limit(mem_lim)
    task.set_env_variable("CXR_LOG_FORMAT", "json")
    kubernetes.set_security_context(task, run_as_user=cfg.run_as_user, run_as_group=cfg.run_as_user,
                                    run_as_non_root=True)
    if "mlflow" in entry.secrets:
        task.set_env_variable("MLFLOW_TRACKING_URI", cfg.tracking_uri)
        keys = {"username": "MLFLOW_TRACKING_USERNAME",
                "password": "MLFLOW_TRACKING_PASSWORD"}  # pragma: allowlist secret
        kubernetes.use_secret_as_env(task, cfg.mlflow_secret, keys, optional=True)
    if "kaggle" in entry.secrets:
        kubernetes.use_secret_as_env(task, cfg.kaggle_secret, {"username": "KAGGLE_USERNAME", "key": "KAGGLE_KEY"},
                                     optional=True)
    if entry.launcher == "trainjob" and (cfg.train_workers or 1) > 1:
        _configure_trainjob(entry, task, cfg)
        return
    if entry.gpu:
        task.set_accelerator_type(cfg.gpu_type).set_accelerator_limit(cfg.gpus)
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        kubernetes.add_node_selector(task, label_key=cfg.gpu_node_label[0], label_value=cfg.gpu_node_label[1])
    # no task.set_retry: KFP would re-run every failure, a usage/params/data error too; the task retries only
    # transient failures itself (pipelines/runtime.py, supervise)


def _configure_trainjob(entry, task, cfg: ClusterConfig) -> None:
    """The train task as the launcher of a TrainJob: no GPU of its own (the workers have them), the TrainJob
    settings in its environment, the shared volume the workers read the shards from and write the model to."""
    from pipelines.trainjob import TrainJobConfig

    task.set_cpu_request("500m").set_cpu_limit("2").set_memory_request("1G").set_memory_limit("4G")
    job = TrainJobConfig(runtime=cfg.trainjob_runtime, image=cfg.image, shared_pvc=cfg.train_shared_pvc,
                         shared_path=cfg.train_shared_path, gpus_per_worker=cfg.gpus, gpu_type=cfg.gpu_type,
                         resources=entry.resources, mlflow_secret=cfg.mlflow_secret)
    for key, value in job.env().items():
        task.set_env_variable(key, value)
    kubernetes.mount_pvc(task, pvc_name=cfg.train_shared_pvc, mount_path=cfg.train_shared_path)


def _configure_light(task, cfg: ClusterConfig) -> None:
    """A bookkeeping task (the partition list): small requests, the same hardening."""
    task.set_cpu_request("100m").set_cpu_limit("500m").set_memory_request("128M").set_memory_limit("512M")
    kubernetes.set_security_context(task, run_as_user=cfg.run_as_user, run_as_group=cfg.run_as_user,
                                    run_as_non_root=True)


def make_pipeline(defaults: dict, cluster: ClusterConfig | None = None, image: str | None = None,
                  tracking_uri: str | None = None, env: dict[str, str] | None = None):
    """The ``cxr-training`` pipeline, its parameters' defaults from ``defaults`` (:func:`default_arguments`);
    ``cluster=None`` leaves out cluster-only settings.

    For a local run: ``image`` the tasks run in (kfp.local's DockerRunner), ``tracking_uri`` the MLflow server the
    tasks that use MLflow get in ``MLFLOW_TRACKING_URI``, as the cluster's tasks get theirs; ``env`` for every task."""
    from components import catalog
    from pipelines import components as c
    from pipelines.tasks import task as task_entry

    image = cluster.image if cluster else (image or DEFAULT_IMAGE)
    # the ParallelFor's bound is part of the compiled pipeline: scale.parallelism as params.yaml says at compile time
    parallelism = int(defaults.get("scale", {}).get("parallelism", 2))

    def run(func, **arguments):
        """A task of the component ``func`` (named after its step), set up from the step's spec (caching) and its
        task entry (cluster settings; for a local run, the environment and the MLflow server)."""
        step = func.__name__.removesuffix("_partition").replace("_", "-")
        task = dsl.component(func, base_image=image, install_kfp_package=False)(**arguments)
        task.set_caching_options(catalog.spec(step).cache)  # gate/register depend on the registry: never cached
        entry = task_entry(step)
        if cluster is not None:
            _configure(entry, task, cluster)
        for key, value in (env or {}).items():
            task.set_env_variable(key, value)
        if tracking_uri and "mlflow" in entry.secrets:
            task.set_env_variable("MLFLOW_TRACKING_URI", tracking_uri)
        return task

    def part_numbers(scale: dict):
        """The task listing the parts of the partitioned steps (the ParallelFors' items)."""
        task = dsl.component(c.partitions, base_image=image, install_kfp_package=False)(scale=scale)
        task.set_caching_options(True)
        if cluster is not None:
            _configure_light(task, cluster)
        return task

    description = ("Chest X-ray classifier: ingest → validate → split → preprocess → (review-labels) → train → "
                   "external → evaluate → gate → register (when the gate passes).")

    # one dict parameter per params.yaml section (defaults: params.yaml at compile time), then data_uri and
    # label_overrides; one task per step (a partitioned step: one task per part under a ParallelFor of at most
    # scale.parallelism, then its merge), each input fed by the output that holds it (as dvc.yaml has it)
    @dsl.pipeline(name="cxr-training", description=description)
    def cxr_training(
        data: dict = defaults["data"], validate: dict = defaults["validate"], split: dict = defaults["split"],
        preprocess: dict = defaults["preprocess"], train: dict = defaults["train"], mlflow: dict = defaults["mlflow"],
        evaluate: dict = defaults["evaluate"], gate: dict = defaults["gate"], registry: dict = defaults["registry"],
        monitor: dict = defaults["monitor"], scale: dict = defaults["scale"], review: dict = defaults["review"],
        data_uri: str = "", label_overrides: str = cluster.label_overrides if cluster else "",
    ):
        ingested = run(c.ingest, data=data, data_uri=data_uri, label_overrides=label_overrides)
        raw = ingested.outputs["out"]

        parts = part_numbers(scale)
        with dsl.ParallelFor(items=parts.output, parallelism=parallelism, name="validate-partitions") as part:
            validate_part = run(c.validate_partition, data=data, validate=validate, scale=scale, raw=raw, part=part)
        validated = run(c.validate, data=data, validate=validate, scale=scale, raw=raw,
                        partials=dsl.Collected(validate_part.outputs["partial"]))

        splits = run(c.split, data=data, split=split, manifest=validated.outputs["out"])

        with dsl.ParallelFor(items=parts.output, parallelism=parallelism, name="preprocess-partitions") as part:
            preprocess_part = run(c.preprocess_partition, data=data, validate=validate, preprocess=preprocess,
                                  train=train, scale=scale, splits=splits.outputs["out"], images=raw, part=part)
        shards = run(c.preprocess, data=data, validate=validate, preprocess=preprocess, train=train, scale=scale,
                     splits=splits.outputs["out"],
                     partials=dsl.Collected(preprocess_part.outputs["partial"])).outputs["out"]

        run(c.review_labels, data=data, review=review, shards=shards)

        model = run(c.train, data=data, preprocess=preprocess, train=train, mlflow=mlflow, monitor=monitor,
                    shards=shards).outputs["out"]

        external = run(c.external, data=data, validate=validate, preprocess=preprocess, train=train,
                       evaluate=evaluate, main_manifest=validated.outputs["out"])

        evaluated = run(c.evaluate, data=data, mlflow=mlflow, evaluate=evaluate, model_dir=model, shards=shards,
                        external=external.outputs["out"])

        gated = run(c.gate, data=data, validate=validate, mlflow=mlflow, evaluate=evaluate, gate=gate,
                    registry=registry, metrics=evaluated.outputs["metrics"], model_dir=model, shards=shards,
                    images=raw, validation=validated.outputs["reports"])

        # a single bool output compared with True: an int literal or a NamedTuple field silently takes the False
        # branch under kfp.local (tests/pipelines/test_run_local.py)
        with dsl.If(gated.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
            run(c.register, data=data, validate=validate, split=split, preprocess=preprocess, train=train,
                mlflow=mlflow, evaluate=evaluate, gate=gate, registry=registry, gate_report=gated.outputs["out"],
                model_dir=model, metrics=evaluated.outputs["metrics"], ingest_report=ingested.outputs["reports"],
                validation=validated.outputs["reports"], split_report=splits.outputs["reports"],
                external_summary=external.outputs["out"])

    return cxr_training


def make_monitor_pipeline(defaults: dict, cluster: ClusterConfig | None = None, image: str | None = None,
                          tracking_uri: str | None = None, env: dict[str, str] | None = None):
    """The one-task ``cxr-monitor`` pipeline (run it on a schedule: ``cxr pipeline schedule --monitor``);
    ``image``, ``tracking_uri`` and ``env`` for a local run, as in :func:`make_pipeline`."""
    from pipelines.monitor import cxr_monitor
    from pipelines.tasks import MONITOR

    cfg = cluster or ClusterConfig()
    op = dsl.component(cxr_monitor, base_image=image or cfg.image, install_kfp_package=False)

    @dsl.pipeline(name="cxr-monitor", description="Compare the prediction log with the champion's training "
                  "reference (OOD rate, drift, live accuracy); submit cxr-training when retraining is due.")
    def cxr_monitor_pipeline(
        monitor: dict = defaults["monitor"], registry: dict = defaults["registry"], mlflow: dict = defaults["mlflow"],
        log_dir: str = cfg.prediction_log_path, model: str = "", kfp_host: str = cfg.kfp_host,
        training_package: str = cfg.training_package, experiment: str = "cxr",
    ):
        task = op(monitor=monitor, registry=registry, mlflow=mlflow, log_dir=log_dir, model=model, kfp_host=kfp_host,
                  training_package=training_package, experiment=experiment)
        task.set_caching_options(False)  # reads the log and the registry: never the same answer twice
        for key, value in {**(env or {}), **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {})}.items():
            task.set_env_variable(key, value)
        if cluster is not None:
            _configure(MONITOR, task, cluster)
            kubernetes.mount_pvc(task, pvc_name=cluster.prediction_log_pvc, mount_path=cluster.prediction_log_path)

    return cxr_monitor_pipeline
