"""The KFP train task with ``train.workers > 1``: a Kubeflow Trainer TrainJob, created and awaited.

The task (a small pod, no GPU of its own when the pipeline is compiled for several workers) stages the
shards and the params on the shared ReadWriteMany volume (``cxr-train-shared``, mounted in the task and in
every worker), creates a ``trainer.kubeflow.org/v1alpha1`` TrainJob that references the TrainingRuntime
``cxr-tensorflow-multiworker`` (``infra/k8s/trainer``: a JobSet of N pods, each building ``TF_CONFIG`` from
its completion index and the headless service, :func:`components.core.model.distributed.tf_config_from_jobset`),
waits for its ``Complete`` or ``Failed`` condition, and copies the chief's ``models/`` into the task's
output artifact. A failed TrainJob fails the task with the TrainJob's reason and message.

The job folder on the volume is named from the training fingerprint (params + data), so a retried task finds
the chief's checkpoint there and the new TrainJob resumes it; a finished job's folder is removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from components.core.contract.errors import CxrError, ServiceError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class TrainJobFailed(CxrError):
    """The TrainJob ended with its Failed condition (its reason and message are in the text)."""

    exit_code = 4


@dataclass(frozen=True)
class TrainJobConfig:
    """What the train task needs to run a TrainJob; the pipeline sets it as ``CXR_TRAINJOB_*`` env variables."""

    runtime: str = "cxr-tensorflow-multiworker"
    image: str = ""
    shared_pvc: str = "cxr-train-shared"
    shared_path: str = "/mnt/cxr-shared"
    namespace: str = ""  # default: the task pod's own namespace
    gpus_per_worker: int = 1
    gpu_type: str = "nvidia.com/gpu"
    # cpu request, cpu limit, memory request, memory limit of each worker
    resources: tuple[str, str, str, str] = ("4", "8", "16G", "48G")
    tracking_uri: str = ""
    mlflow_secret: str = "mlflow-credentials"
    poll_seconds: float = 15.0
    timeout_seconds: float = 3 * 24 * 3600.0
    extra_env: dict[str, str] = field(default_factory=dict)

    ENV: ClassVar[dict[str, str]] = {
           "runtime": "CXR_TRAINJOB_RUNTIME", "image": "CXR_TRAINJOB_IMAGE", "shared_pvc": "CXR_TRAINJOB_PVC",
           "shared_path": "CXR_TRAINJOB_PATH", "namespace": "CXR_TRAINJOB_NAMESPACE",
           "gpus_per_worker": "CXR_TRAINJOB_GPUS", "gpu_type": "CXR_TRAINJOB_GPU_TYPE",
           "mlflow_secret": "CXR_TRAINJOB_MLFLOW_SECRET",  # pragma: allowlist secret (the Secret's name)
           "poll_seconds": "CXR_TRAINJOB_POLL_SECONDS"}

    def env(self) -> dict[str, str]:
        """The task's environment that :meth:`from_env` reads back (``namespace`` only when set)."""
        out = {var: str(getattr(self, k)) for k, var in self.ENV.items() if getattr(self, k) not in ("", None)}
        out["CXR_TRAINJOB_RESOURCES"] = ",".join(self.resources)
        return out

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TrainJobConfig | None:
        """The config the pipeline put in the task's environment, or None (no TrainJob: local workers)."""
        env = dict(os.environ if env is None else env)
        if not env.get(cls.ENV["runtime"]):
            return None
        kw: dict = {}
        for k, var in cls.ENV.items():
            if var in env:
                kw[k] = type(getattr(cls(), k))(env[var])
        if env.get("CXR_TRAINJOB_RESOURCES"):
            kw["resources"] = tuple(env["CXR_TRAINJOB_RESOURCES"].split(","))
        kw["tracking_uri"] = env.get("MLFLOW_TRACKING_URI", "")
        return cls(**kw)


def job_name(fingerprint: str) -> str:
    """A DNS-1123 name from the training fingerprint: the same params and data, the same job folder."""
    return "cxr-train-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:12]


def manifest(cfg: TrainJobConfig, name: str, namespace: str, workers: int, job_dir: str, track: bool) -> dict:
    """The TrainJob: N nodes of the runtime, each running ``cxr train`` on the staged shards, with a GPU
    request per node and the MLflow settings (the credentials from the Secret; tolerations, the shared
    volume and the JobSet-derived TF_CONFIG come from the TrainingRuntime)."""
    cpu_req, cpu_lim, mem_req, mem_lim = cfg.resources
    limits: dict[str, str] = {"cpu": cpu_lim, "memory": mem_lim}
    requests: dict[str, str] = {"cpu": cpu_req, "memory": mem_req}
    if cfg.gpus_per_worker:
        limits[cfg.gpu_type] = requests[cfg.gpu_type] = str(cfg.gpus_per_worker)
    env = [{"name": "CXR_NUM_WORKERS", "value": str(workers)}, {"name": "CXR_LOG_FORMAT", "value": "json"},
           *({"name": k, "value": v} for k, v in sorted(cfg.extra_env.items()))]
    if track:
        env += [{"name": "MLFLOW_TRACKING_URI", "value": cfg.tracking_uri},
                *({"name": var, "valueFrom": {"secretKeyRef": {"name": cfg.mlflow_secret, "key": key,
                                                               "optional": True}}}
                  for key, var in (("username", "MLFLOW_TRACKING_USERNAME"),
                                   ("password", "MLFLOW_TRACKING_PASSWORD")))]  # pragma: allowlist secret
    trainer: dict = {
        "numNodes": workers,
        "command": ["cxr", "train"],
        "args": ["--params", f"{job_dir}/params.yaml", "--shards", f"{job_dir}/shards", "--out",
                 f"{job_dir}/models", "--state", f"{job_dir}/state", *([] if track else ["--no-mlflow"])],
        "env": env,
        "resourcesPerNode": {"requests": requests, "limits": limits},
    }
    if cfg.image:
        trainer["image"] = cfg.image
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJob",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "cxr-mlops", "app.kubernetes.io/component": "train"}},
            "spec": {"runtimeRef": {"apiGroup": GROUP, "kind": "TrainingRuntime", "name": cfg.runtime},
                     "trainer": trainer}}


def condition(obj: dict, kind: str) -> dict | None:
    for c in ((obj.get("status") or {}).get("conditions") or []):
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


class Api:
    """The TrainJob calls (``kubernetes`` client, in-cluster or from a kubeconfig)."""

    def __init__(self, kubeconfig: str | None = None, timeout: float = 30.0) -> None:
        from kubernetes import client, config

        try:
            if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                api = config.new_client_from_config(config_file=kubeconfig)
            else:
                config.load_incluster_config()
                api = client.ApiClient()
        except Exception as err:
            raise ServiceError(f"no Kubernetes API for the TrainJob: {type(err).__name__}: {str(err)[:200]}") from None
        self.custom, self.timeout = client.CustomObjectsApi(api), timeout

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs, _request_timeout=self.timeout)
        except Exception as err:
            status = getattr(err, "status", None)
            if status == 404:
                return None
            raise ServiceError(f"{what}: {type(err).__name__} {status or ''}: "
                               f"{str(getattr(err, 'body', '') or err)[:300]}") from None

    def create(self, body: dict) -> dict:
        m = body["metadata"]
        return self._call(f"create TrainJob {m['name']}", self.custom.create_namespaced_custom_object, GROUP, VERSION,
                          m["namespace"], PLURAL, body)

    def get(self, namespace: str, name: str) -> dict | None:
        return self._call(f"read TrainJob {name}", self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                          PLURAL, name)

    def delete(self, namespace: str, name: str) -> None:
        self._call(f"delete TrainJob {name}", self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace,
                   PLURAL, name, propagation_policy="Background")


def wait(api: Api, namespace: str, name: str, cfg: TrainJobConfig, sleep=time.sleep) -> dict:
    """Poll until the TrainJob is Complete (return it) or Failed (raise :class:`TrainJobFailed`)."""
    started = time.monotonic()
    last = ""
    while True:
        obj = api.get(namespace, name)
        if obj is None:
            raise TrainJobFailed(f"TrainJob {namespace}/{name} disappeared while the task waited for it")
        if condition(obj, "Complete"):
            return obj
        failed = condition(obj, "Failed")
        if failed:
            raise TrainJobFailed(f"TrainJob {namespace}/{name} failed: {failed.get('reason', '?')}: "
                                 f"{failed.get('message', '')}")
        status = ", ".join(f"{c.get('type')}={c.get('status')}" for c in
                           ((obj.get("status") or {}).get("conditions") or [])) or "no conditions yet"
        if status != last:
            log.info("TrainJob %s: %s", name, status)
            last = status
        if time.monotonic() - started > cfg.timeout_seconds:
            raise TrainJobFailed(f"TrainJob {namespace}/{name} did not finish in {cfg.timeout_seconds:.0f} s "
                                 f"({status})")
        sleep(cfg.poll_seconds)


def _namespace(cfg: TrainJobConfig) -> str:
    if cfg.namespace:
        return cfg.namespace
    if NAMESPACE_FILE.is_file():
        return NAMESPACE_FILE.read_text().strip()
    raise CxrError("no namespace for the TrainJob: set CXR_TRAINJOB_NAMESPACE (or run in a pod)")


def applies(params) -> bool:
    """Whether the train task hands its work to a TrainJob: several workers (``train.workers``)."""
    return params.train.workers > 1


def run(params, shards: str | Path, out: str | Path, state: str | Path, *, cfg: TrainJobConfig, track: bool = True,
        api: Api | None = None, sleep=time.sleep) -> dict:
    """Stage, create, await the TrainJob; copy the chief's model folder to ``out``; return its summary."""
    import yaml

    from components import train
    from components.core.contract.fsutil import atomic_path, read_json, remove
    from components.core.contract.params_view import view

    params = view(params, train.SPEC.params, train.SPEC.name)  # what the train step reads, as in its run()
    workers = params.train.workers
    fp = train.fingerprint(params, Path(shards))
    name, namespace = job_name(fp), _namespace(cfg)
    job_dir = Path(cfg.shared_path) / name
    (job_dir / "models").exists() and remove(job_dir / "models")  # a half-written result of an earlier attempt
    with atomic_path(job_dir / "shards", directory=True) as tmp:
        shutil.copytree(shards, tmp, dirs_exist_ok=True)
    (job_dir / "params.yaml").write_text(yaml.safe_dump(
        params.unwrap().model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False))
    api = api or Api()
    body = manifest(cfg, name, namespace, workers, str(job_dir), track)
    if api.get(namespace, name) is not None:  # an earlier attempt's job: replace it (the state folder stays)
        log.info("TrainJob %s exists from an earlier attempt: replacing it (training resumes from its checkpoint)",
                 name)
        api.delete(namespace, name)
        for _ in range(60):
            if api.get(namespace, name) is None:
                break
            sleep(2)
    api.create(body)
    log.info("created TrainJob %s/%s: %d workers of runtime %s; shared folder %s", namespace, name, workers,
             cfg.runtime, job_dir)
    wait(api, namespace, name, cfg, sleep)
    summary_file = job_dir / "models" / "train_summary.json"
    if not summary_file.is_file():
        raise TrainJobFailed(f"TrainJob {name} completed but its chief wrote no {summary_file}")
    with atomic_path(Path(out), directory=True) as tmp:
        shutil.copytree(job_dir / "models", tmp, dirs_exist_ok=True)
    summary = read_json(summary_file)
    summary["trainjob"] = {"name": name, "namespace": namespace, "workers": workers, "runtime": cfg.runtime}
    remove(job_dir)
    api.delete(namespace, name)
    return summary
