"""Multi-worker training: who this process is (``TF_CONFIG``), the strategy, and a local launcher.

``train.workers: N > 1`` trains data-parallel with ``tf.distribute.MultiWorkerMirroredStrategy``
(synchronous all-reduce; inside each worker it mirrors over that worker's GPUs, like MirroredStrategy).
Each worker process learns its place from ``TF_CONFIG``::

    {"cluster": {"worker": ["host0:port", "host1:port", ...]}, "task": {"type": "worker", "index": i}}

Worker 0 is the **chief**: only it writes the resumable checkpoint, the model and the reports and logs
to MLflow; every worker reads the chief's checkpoint to resume (a shared folder: a ReadWriteMany volume
on the cluster). Where ``TF_CONFIG`` comes from:

- on the cluster, a Kubeflow Trainer TrainJob (``infra/k8s/trainer``) runs N pods of a JobSet; each
  builds ``TF_CONFIG`` from its completion index and the headless service's host names
  (:func:`tf_config_from_jobset`, run by ``cxr train`` when ``CXR_TF_CONFIG_FROM=jobset``);
- on one machine (``cxr train`` / ``dvc repro`` with ``train.workers > 1``, and the tests), :func:`launch_local`
  starts N processes on 127.0.0.1, each with its ``TF_CONFIG``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from components.core.contract.errors import CxrError

log = logging.getLogger(__name__)

# JobSet: the replicated job's name in infra/k8s/trainer/trainingruntime.yaml, and the worker port
REPLICATED_JOB = "node"
DEFAULT_PORT = 2222


@dataclass(frozen=True)
class Worker:
    """This process's place in the job: ``count`` workers, this one is ``index`` (0: the chief)."""

    count: int = 1
    index: int = 0

    @property
    def chief(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.count > 1


def tf_config_from_jobset(env: dict[str, str] | None = None) -> dict:
    """``TF_CONFIG`` for a pod of a Kubeflow Trainer TrainJob (a JobSet of one Indexed Job).

    Reads ``JOB_COMPLETION_INDEX`` (set by Kubernetes for an Indexed Job's pods), ``CXR_JOBSET_NAME`` (the
    pod's ``jobset.sigs.k8s.io/jobset-name`` label through the downward API: the TrainJob's name),
    ``CXR_NUM_WORKERS`` and ``CXR_WORKER_PORT``. JobSet names pod *i* of replicated job ``node``
    ``<jobset>-node-0-<i>`` and puts it in the headless service ``<jobset>`` (its subdomain), so worker *i*
    is ``<jobset>-node-0-<i>.<jobset>:<port>``.
    """
    env = dict(os.environ if env is None else env)
    try:
        name, count = env["CXR_JOBSET_NAME"], int(env["CXR_NUM_WORKERS"])
        index = int(env.get("JOB_COMPLETION_INDEX", env.get("CXR_WORKER_INDEX", "")))
    except (KeyError, ValueError) as err:
        raise CxrError(f"cannot build TF_CONFIG from the JobSet environment: {type(err).__name__} {err} (needs "
                       "CXR_JOBSET_NAME, CXR_NUM_WORKERS and JOB_COMPLETION_INDEX)") from None
    port = int(env.get("CXR_WORKER_PORT", DEFAULT_PORT))
    if not 0 <= index < count:
        raise CxrError(f"worker index {index} is outside 0..{count - 1}")
    hosts = [f"{name}-{REPLICATED_JOB}-0-{i}.{name}:{port}" for i in range(count)]
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def worker(env: dict[str, str] | None = None) -> Worker:
    """This process's place, from ``TF_CONFIG`` (built from the JobSet first when ``CXR_TF_CONFIG_FROM=jobset``)."""
    env = os.environ if env is None else env
    if env.get("CXR_TF_CONFIG_FROM") == "jobset" and "TF_CONFIG" not in env:
        os.environ["TF_CONFIG"] = json.dumps(tf_config_from_jobset(dict(env)))
        env = os.environ
    raw = env.get("TF_CONFIG")
    if not raw:
        return Worker()
    try:
        cfg = json.loads(raw)
        count = len(cfg["cluster"]["worker"])
        index = int(cfg["task"]["index"]) if cfg["task"]["type"] == "worker" else -1
    except (ValueError, KeyError, TypeError) as err:
        raise CxrError(f"TF_CONFIG is not a worker cluster spec: {err}") from None
    if index < 0 or index >= count:
        raise CxrError(f"TF_CONFIG: task {cfg['task']} is not one of the {count} workers")
    return Worker(count, index)


def strategy(me: Worker):
    """MultiWorkerMirroredStrategy for a multi-worker job (NCCL between GPUs, ring all-reduce on CPUs)."""
    import tensorflow as tf

    if not me.distributed:
        raise CxrError("a multi-worker strategy needs TF_CONFIG with more than one worker")
    patch_keras_reduce()
    built = tf.distribute.MultiWorkerMirroredStrategy()
    answer_sigterm()
    return built


def answer_sigterm() -> None:
    """Let SIGTERM end this worker again. TensorFlow's coordination service (started with the strategy) catches
    SIGTERM in C++ to note a preemption and goes on, so a worker waiting in a collective for a peer that died
    never ended: ``launch_local`` waited for SIGKILL, and a TrainJob pod for its whole termination grace period.
    Nothing is lost by ending at once: every checkpoint file is written to a temporary name and renamed."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def patch_keras_reduce() -> bool:
    """Keras 3.15 (TF backend) reduces a train/test step's logs under MultiWorkerMirroredStrategy with
    ``strategy.reduce("MEAN", v, axis=0)``, which fails for its scalar logs ("Invalid reduction dimension 0 for
    input with 0 dimensions"), so ``fit`` cannot run multi-worker at all. The logs are metric results; their mean
    over the replicas (``axis=None``) is what "mean" means. Patched once, only for that case; returns whether
    Keras still has the bug (``tests/components/core/model/test_distributed.py`` says when it is fixed)."""
    import keras
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer.reduce_per_replica, "_cxr_patched", False):
        return True
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._cxr_patched = True  # type: ignore[attr-defined]
    tf_trainer.reduce_per_replica = reduce_per_replica
    return True


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def launch_local(argv: list[str], count: int, log_dir: str | Path, env: dict[str, str] | None = None,
                 timeout: float | None = None) -> list[int]:
    """Run ``argv`` (a ``python …`` command line) as ``count`` worker processes on 127.0.0.1, each with its
    ``TF_CONFIG``; wait for all. A worker that fails stops the others (a synchronous job cannot go on without
    it) and raises :class:`CxrError` naming it and the tail of its log (``log_dir/worker-<i>.log``)."""
    hosts = [f"127.0.0.1:{p}" for p in free_ports(count)]
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(count):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        child_env = {**os.environ, **(env or {}), "TF_CONFIG": json.dumps(tf_config)}
        child_env.pop("CXR_TF_CONFIG_FROM", None)
        out = open(log_dir / f"worker-{i}.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(argv, env=child_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        (log_dir / f"worker-{i}.pid").write_text(str(proc.pid))
        procs.append((proc, out))
    log.info("started %d local workers (%s); logs in %s", count, ", ".join(hosts), log_dir)
    started = time.monotonic()
    try:
        while True:
            codes = [p.poll() for p, _ in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i = failed[0]
                tail = (log_dir / f"worker-{i}.log").read_text(errors="replace")[-3000:]
                raise CxrError(f"worker {i} of {count} exited with {codes[i]}; the others were stopped. Its log "
                               f"ends:\n{tail}")
            if all(c == 0 for c in codes):
                return [0] * count
            if timeout is not None and time.monotonic() - started > timeout:
                raise CxrError(f"the {count} local workers did not finish in {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        stop(procs, count)


# how long stopped workers get to answer SIGTERM before SIGKILL. A worker answers at once (``answer_sigterm``)
# except while its strategy starts (TensorFlow already catches SIGTERM there); it has nothing to finish on the way
# out (checkpoints are atomic), so the grace is short, and all the workers share it
STOP_GRACE_S = 2.0


def stop(procs: list, count: int) -> None:
    """SIGTERM to every worker still running (its process group), SIGKILL to those still there after the grace."""
    running = [(i, p) for i, (p, _) in enumerate(procs) if p.poll() is None]
    for _, p in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(p.poll() is None for _, p in running):
        time.sleep(0.05)
    for i, p in running:
        if p.poll() is None:
            log.warning("worker %d of %d did not answer SIGTERM in %.0f s: killed", i, count, STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    for _, out in procs:
        out.close()


def python_argv(module: str, *args: str) -> list[str]:
    """``python -m module args…`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
