"""The ``cxr-training`` pipeline: one task per step, register behind ``dsl.If`` on the gate's bool.

Pipeline parameters mirror ``params.yaml`` (one ``dict`` per section, defaults read from the file at
compile time) plus ``data_uri`` (``dvc://<git-url>@<rev>`` to train on exactly what a commit pins).
Cluster settings: the train task asks for a GPU on tainted GPU nodes; every task has CPU/memory
requests and limits, runs as a non-root user, and gets credentials from Kubernetes Secrets.
"""

from dataclasses import dataclass
from pathlib import Path

from kfp import dsl, kubernetes

from pipelines import steps

SECTIONS = ("data", "validate", "split", "preprocess", "train", "evaluate", "gate", "registry", "mlflow")
DEFAULT_IMAGE = "ghcr.io/cxr-mlops/cxr-mlops-gpu:latest"


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


# (cpu request, cpu limit, memory request, memory limit) per task
RESOURCES = {
    "ingest": ("1", "2", "2G", "8G"), "validate": ("2", "4", "4G", "8G"), "split": ("500m", "1", "1G", "2G"),
    "preprocess": ("2", "8", "4G", "16G"), "external": ("2", "4", "4G", "16G"),
    "train": ("4", "8", "16G", "48G"), "evaluate": ("2", "4", "8G", "16G"),
    "gate": ("2", "4", "8G", "16G"), "register": ("500m", "1", "2G", "4G"),
}


def default_arguments(params_path: str | Path = "params.yaml") -> dict:
    from components.core.config import load_params

    dumped = load_params(params_path).model_dump(mode="json", by_alias=True, exclude_none=True)
    return {s: dumped[s] for s in SECTIONS}  # None is not a protobuf value: unset keys take their defaults


def _configure(name: str, task, cfg: ClusterConfig) -> None:
    cpu_req, cpu_lim, mem_req, mem_lim = RESOURCES[name]
    task.set_display_name(name).set_cpu_request(cpu_req).set_cpu_limit(cpu_lim)
    task.set_memory_request(mem_req).set_memory_limit(mem_lim)
    kubernetes.set_security_context(task, run_as_user=cfg.run_as_user, run_as_group=cfg.run_as_user,
                                    run_as_non_root=True)
    if name in ("train", "evaluate", "gate", "register"):
        task.set_env_variable("MLFLOW_TRACKING_URI", cfg.tracking_uri)
        keys = {"username": "MLFLOW_TRACKING_USERNAME",
                "password": "MLFLOW_TRACKING_PASSWORD"}  # pragma: allowlist secret
        kubernetes.use_secret_as_env(task, cfg.mlflow_secret, keys, optional=True)
    if name in ("ingest", "external"):
        kubernetes.use_secret_as_env(task, cfg.kaggle_secret, {"username": "KAGGLE_USERNAME", "key": "KAGGLE_KEY"},
                                     optional=True)
    if name == "train":
        task.set_accelerator_type(cfg.gpu_type).set_accelerator_limit(cfg.gpus)
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        kubernetes.add_node_selector(task, label_key=cfg.gpu_node_label[0], label_value=cfg.gpu_node_label[1])
    if name in ("ingest", "external", "register"):
        task.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="600s")
    # data and model steps are cached; the gate and register depend on the registry's state
    task.set_caching_options(name not in ("gate", "register"))


def make_pipeline(defaults: dict, cluster: ClusterConfig | None = None):
    """Build the pipeline function; ``cluster=None`` leaves out cluster-only settings (kfp.local)."""
    ops = steps.build(cluster.image if cluster else DEFAULT_IMAGE)

    def conf(name: str, task):
        if cluster is not None:
            _configure(name, task, cluster)
        else:
            task.set_caching_options(name not in ("gate", "register"))
        return task

    @dsl.pipeline(name="cxr-training", description="Chest X-ray classifier: ingest → validate → split → "
                  "preprocess → train → evaluate → gate → register (when the gate passes).")
    def cxr_training(
        data: dict = defaults["data"], validate: dict = defaults["validate"], split: dict = defaults["split"],
        preprocess: dict = defaults["preprocess"], train: dict = defaults["train"],
        evaluate: dict = defaults["evaluate"], gate: dict = defaults["gate"], registry: dict = defaults["registry"],
        mlflow: dict = defaults["mlflow"], data_uri: str = "",
    ):
        ingest_t = conf("ingest", ops["ingest_op"](data=data, data_uri=data_uri))
        validate_t = conf("validate", ops["validate_op"](data=data, validate=validate, raw=ingest_t.outputs["raw"]))
        split_t = conf("split", ops["split_op"](data=data, split=split, validated=validate_t.outputs["validated"]))
        prep_t = conf("preprocess", ops["preprocess_op"](
            data=data, validate=validate, preprocess=preprocess, train=train, splits=split_t.outputs["splits"],
            raw=ingest_t.outputs["raw"]))
        ext_t = conf("external", ops["external_op"](
            data=data, validate=validate, preprocess=preprocess, train=train, evaluate=evaluate,
            validated=validate_t.outputs["validated"]))
        train_t = conf("train", ops["train_op"](data=data, preprocess=preprocess, train=train, mlflow=mlflow,
                                                shards=prep_t.outputs["shards"]))
        eval_t = conf("evaluate", ops["evaluate_op"](data=data, train=train, evaluate=evaluate, mlflow=mlflow,
                                                     model=train_t.outputs["model"], shards=prep_t.outputs["shards"],
                                                     external=ext_t.outputs["external"]))
        gate_t = conf("gate", ops["gate_op"](data=data, validate=validate, gate=gate, registry=registry,
                                             mlflow=mlflow, report=eval_t.outputs["report"],
                                             shards=prep_t.outputs["shards"], raw=ingest_t.outputs["raw"]))
        # a single bool output compared with True: an int literal or a NamedTuple field silently
        # takes the False branch under kfp.local (tests/pipelines/test_run_local.py)
        with dsl.If(gate_t.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
            conf("register", ops["register_op"](data=data, preprocess=preprocess, train=train, evaluate=evaluate,
                                                registry=registry, mlflow=mlflow, report=eval_t.outputs["report"],
                                                model=train_t.outputs["model"], external=ext_t.outputs["external"]))

    return cxr_training
