"""Multi-worker training: TF_CONFIG from a JobSet, and two real worker processes on 127.0.0.1 against one
process (same metrics within a tolerance), then kill -9 of a worker and a rerun that resumes."""

import inspect
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from components import train
from components.core.contract.errors import CxrError
from components.core.model import distributed
from tests.support import train_params

# the proof's schedule: one phase, every layer, 3 epochs (the tiny demo: 27 training images at 32 px)
# several workers skip the BatchNorm refresh (train.refresh_batchnorm): off for both, the same training
PROOF = {"phases": [{"epochs": 3, "trainable": "all", "lr": 0.003}], "calibrate": False, "refresh_batchnorm": 0}


def test_tf_config_from_the_jobset_names_every_pod_of_the_headless_service():
    env = {"CXR_JOBSET_NAME": "cxr-train-abc", "CXR_NUM_WORKERS": "3", "JOB_COMPLETION_INDEX": "2",
           "CXR_WORKER_PORT": "2222"}
    cfg = distributed.tf_config_from_jobset(env)
    assert cfg == {"cluster": {"worker": [f"cxr-train-abc-node-0-{i}.cxr-train-abc:2222" for i in range(3)]},
                   "task": {"type": "worker", "index": 2}}
    me = distributed.worker({"TF_CONFIG": json.dumps(cfg)})
    assert (me.count, me.index, me.chief, me.distributed) == (3, 2, False, True)
    assert distributed.worker({}) == distributed.Worker(1, 0)
    with pytest.raises(CxrError, match="JOB_COMPLETION_INDEX"):
        distributed.tf_config_from_jobset({"CXR_JOBSET_NAME": "x", "CXR_NUM_WORKERS": "2"})
    with pytest.raises(CxrError, match="outside"):
        distributed.tf_config_from_jobset({**env, "JOB_COMPLETION_INDEX": "3"})


def test_keras_still_reduces_multi_worker_logs_with_axis_0():
    """distributed.patch_keras_reduce works around Keras 3.15; when this fails, Keras changed: drop the patch."""
    from keras.src.backend.tensorflow import trainer

    assert 'strategy.reduce("MEAN", v, axis=0)' in inspect.getsource(trainer.reduce_per_replica)


def _params(workers: int):
    p = train_params(**PROOF)
    return p.model_copy(update={"train": p.train.model_copy(update={"workers": workers})})


@pytest.mark.slow
def test_two_workers_train_like_one_and_resume_after_kill_9(tiny_shards, tmp_path):
    # kill -9 one worker after the first epoch's checkpoint: the job fails; the same command resumes it and ends
    # where one worker ends. The launcher stops the chief (SIGTERM, answered at once); meanwhile the one-worker
    # training runs, and the job's end is checked after it
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nfrom components import train\n"
        "from tests.components.core.model.test_distributed import _params\n"
        f"train.run(_params(2), Path({str(tiny_shards)!r}), Path(sys.argv[1]), Path(sys.argv[2]), track=False)\n")
    state = tmp_path / "state-kill"
    launcher_log = tmp_path / "launcher.log"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed"), str(state)],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                            stdout=subprocess.DEVNULL, stderr=launcher_log.open("w"))
    try:
        logs = state.with_name(state.name + "-workers")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            st = state / "state.json"
            if st.is_file() and json.loads(st.read_text())["epoch"] >= 1 and (logs / "worker-1.pid").is_file():
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before a checkpoint was seen"
        os.kill(int((logs / "worker-1.pid").read_text()), signal.SIGKILL)

        one = train.run(_params(1), tiny_shards, tmp_path / "one", tmp_path / "state1", track=False)
        assert proc.wait(120) != 0  # the launcher saw worker 1 die, stopped the chief and failed
        launched = launcher_log.read_text()
        assert "worker 1 of 2 exited with -9" in launched
        # the chief, waiting in a collective for its dead peer, answered SIGTERM: TensorFlow's coordination service
        # catches it, and distributed.strategy gave it back its default (else: SIGKILL after the grace, and this)
        assert "did not answer SIGTERM" not in launched
    finally:
        if proc.poll() is None:
            try:
                proc.wait(120)  # it stops its workers
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert json.loads((state / "state.json").read_text())["epoch"] >= 1
    resumed = train.run(_params(2), tiny_shards, tmp_path / "killed", state, track=False)
    assert resumed["resumed_from_epoch"] >= 1 and resumed["epochs_run"] == 3
    assert resumed["device"]["workers"] == 2 and resumed["device"]["replicas"] == 2
    assert (tmp_path / "killed" / "model.keras").is_file() and not state.exists()
    # the same data, global batch and seed; the gradient of each global batch is the same sum, but the images fall
    # into batches in another order (each worker streams its half): close to one worker's, not equal
    assert abs(resumed["best_value"] - one["best_value"]) < 0.1, (one["best_value"], resumed["best_value"])


def test_launch_local_stops_the_other_workers_at_once_and_kills_one_that_ignores_sigterm(tmp_path, caplog):
    # worker 1 fails once the others run; worker 0 ignores SIGTERM (as a TensorFlow worker does while its strategy
    # starts): SIGKILL after the short grace; worker 2 answers SIGTERM at once
    ready = tmp_path / "ready"
    code = ("import json, os, signal, sys, time\nfrom pathlib import Path\n"
            "i = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
            "if i == 0:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"if i != 1:\n    Path({str(ready)!r} + str(i)).touch()\n    time.sleep(300)\n"
            f"while not all(Path({str(ready)!r} + str(j)).exists() for j in (0, 2)):\n    time.sleep(0.02)\n"
            "sys.exit(3)\n")
    started = time.monotonic()
    with pytest.raises(CxrError, match="worker 1 of 3 exited with 3"):
        distributed.launch_local([sys.executable, "-c", code], 3, tmp_path / "logs")
    assert time.monotonic() - started < 9  # the old launcher waited 10 s for each worker that ignored SIGTERM
    assert "worker 0 of 3 did not answer SIGTERM in 2 s: killed" in caplog.text
    assert "worker 2 of 3" not in caplog.text
