"""A KFP task retries only what can be transient (pipelines/runtime.py, supervise): the real ingest task, in its
real child process. KFP's own retry policy cannot tell failures apart (it re-runs every one), so none is compiled
(tests/pipelines/test_compile.py); the container test runs the same under kfp.local's DockerRunner."""

import os
import re
import signal
import threading
import time

import psutil
import pytest
from kfp import dsl

from pipelines.runtime import run_task

TINY_DEMO = {"source": "demo", "demo": {"patients_per_class": 3, "max_images_per_patient": 1, "min_side": 64,
                                        "max_side": 64}}


def ingest_args(tmp_path, data: dict, data_uri: str = "") -> dict:
    return {"data": data, "data_uri": data_uri, "label_overrides": "",
            "out": dsl.Dataset(name="out", uri=str(tmp_path / "out")),
            "reports": dsl.Dataset(name="reports", uri=str(tmp_path / "reports"))}


def supervisor_lines(err: str, text: str) -> int:
    """The supervisor's own log lines containing ``text`` (another test's stale handler may echo a record)."""
    return len(re.findall(rf"^\S+ \S+ (?:WARNING|ERROR) +pipelines\.runtime: .*{re.escape(text)}", err, re.M))


@pytest.fixture(autouse=True)
def _short_backoff(monkeypatch):
    monkeypatch.setenv("CXR_RETRY_BACKOFF_SECONDS", "0.05")


def test_a_params_error_fails_at_once_with_its_exit_code(tmp_path, capfd):
    started = time.time()
    with pytest.raises(SystemExit) as exc:
        run_task("ingest", ingest_args(tmp_path, {"source": "no-such-source"}))
    assert exc.value.code == 3  # bad parameters: the task's container exits 3, like `cxr ingest`
    err = capfd.readouterr().err
    assert "data.source" in err and "retrying" not in err
    assert time.time() - started < 30  # one attempt, no back-off
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # four `dvc get` runs
def test_a_service_error_is_retried_then_fails_with_exit_5(tmp_path, capfd):
    # dvc get from a repository that is not there: ServiceError (exit 5), retried 3 times (its task entry)
    with pytest.raises(SystemExit) as exc:
        run_task("ingest", ingest_args(tmp_path, TINY_DEMO, data_uri=f"dvc://{tmp_path}/no-repo@v1"))
    assert exc.value.code == 5
    err = capfd.readouterr().err
    assert supervisor_lines(err, "service unavailable (exit 5) (attempt") == 3
    assert supervisor_lines(err, "after 4 attempts") == 1


def test_a_killed_step_is_retried_and_the_task_succeeds(tmp_path, capfd):
    """SIGKILL of the step's process, as the kernel's OOM killer sends it: the task runs the step again."""
    killed = []

    def kill_first_child():
        me = psutil.Process()
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            for child in me.children():
                if "pipelines.runtime" in " ".join(child.cmdline()):
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_child)
    killer.start()
    summary = run_task("ingest", ingest_args(tmp_path, TINY_DEMO))
    killer.join()
    assert killed
    assert '"images": 9' in summary
    err = capfd.readouterr().err
    assert supervisor_lines(err, "killed by SIGKILL") == 1
    assert (tmp_path / "out" / "manifest.csv").is_file()
