""".ci/system-deps.sh, the real script, on a PATH of stand-ins: a docker client whose server does not answer, an
apt-get that "installs" by writing programs into that folder, a dockerd that makes the server answer (or never
does, or exits). Nothing here can reach this machine's daemon or packages: the stand-ins shadow docker, apt-get,
systemctl, id and ldconfig, and the PATH has no sbin folder, where the real dockerd lives. The last test runs the
script's check against this machine's real Docker."""

import contextlib
import os
import re
import signal
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "system-deps.sh"
CHROMIUM = Path("/usr/bin/chromium")  # the script checks this path, the one tests/serving/test_browser.py runs

ANSWERS = "client 28.2.2 (API 1.41), server 20.10.24 (API 1.41, minimum 1.12)"
DOCKER = f"""#!/bin/sh
[ "$1" = version ] || exit 2
if [ -n "$FAKE_REFUSE" ]; then echo "$FAKE_REFUSE" >&2; exit 1; fi
if [ -e "$FAKE/up" ]; then echo "{ANSWERS}"; exit 0; fi
echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
exit 1
"""
# a daemon: answers after a second and runs until killed; FAKE_DOCKERD=never: runs and never answers;
# FAKE_DOCKERD=exits: fails at once with a message in its log
DOCKERD = """#!/bin/sh
echo $$ > "$FAKE/dockerd.pid"
case "$FAKE_DOCKERD" in
  exits) echo "failed to start daemon: iptables not found" >&2; exit 1 ;;
  never) exec sleep 60 ;;
esac
sleep 1; touch "$FAKE/up"; exec sleep 60
"""
# apt-get install P...: records the call and puts each package's program into $FAKE/bin
APT_GET = """#!/bin/sh
echo "$*" >> "$FAKE/apt.log"
[ "$1" = install ] || exit 0
for p in "$@"; do
  case "$p" in
    docker.io) [ -n "$FAKE_NO_DOCKERD" ] || cp "$FAKE/dockerd.src" "$FAKE/bin/dockerd"
               chmod +x "$FAKE/bin/dockerd" 2>/dev/null || true ;;
    libatomic1) touch "$FAKE/libatomic" ;;
    debootstrap) printf '#!/bin/sh\\n' > "$FAKE/bin/debootstrap"; chmod +x "$FAKE/bin/debootstrap" ;;
  esac
done
"""


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake(tmp_path):
    if not CHROMIUM.exists():  # the script checks the real one; .ci/test installs it before the tests run
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is missing: .ci/system-deps.sh installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _write(bin_ / "docker", DOCKER)
    _write(bin_ / "apt-get", APT_GET)
    _write(bin_ / "systemctl", "#!/bin/sh\necho \"$*\" >> \"$FAKE/systemctl.log\"\nexit 1\n")
    _write(bin_ / "id", "#!/bin/sh\necho 0\n")  # root: no sudo, PATH is the only place programs are looked for
    # the dynamic linker's cache: libatomic.so.1 is there once $FAKE/libatomic is
    _write(bin_ / "ldconfig", "#!/bin/sh\n[ -e \"$FAKE/libatomic\" ] && "
                              "printf '\\tlibatomic.so.1 (libc6,x86-64) => /lib/libatomic.so.1\\n'\nexit 0\n")
    (tmp_path / "libatomic").touch()
    (tmp_path / "dockerd.src").write_text(DOCKERD)
    yield tmp_path
    pid = tmp_path / "dockerd.pid"
    if pid.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid.read_text()), signal.SIGKILL)


def run(fake: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {"PATH": f"{fake / 'bin'}:/usr/bin:/bin", "FAKE": str(fake), "HOME": str(fake),
               "CXR_DOCKERD_LOG": str(fake / "dockerd.log"), "CXR_DOCKERD_WAIT": "10", **env}
    return subprocess.run(["/bin/bash", str(SCRIPT), *args], env=environ, capture_output=True, text=True,
                          timeout=60)


def apt_calls(fake: Path) -> str:
    log = fake / "apt.log"
    return log.read_text() if log.exists() else ""


def test_check_names_the_missing_daemon_and_installs_nothing(fake):
    proc = run(fake, "--check")
    assert proc.returncode == 1
    assert "no Docker server answers" in proc.stderr and "dockerd is not on PATH" in proc.stderr
    assert "apt-get install -y --no-install-recommends debootstrap docker.io" in proc.stderr
    assert apt_calls(fake) == ""


def test_installs_and_starts_dockerd_beside_an_existing_client(fake):
    # the client is there (the fresh CI machine's /usr/local/bin/docker), dockerd is not: docker.io goes in
    proc = run(fake)
    assert proc.returncode == 0, proc.stderr
    assert "--no-remove debootstrap docker.io" in apt_calls(fake)
    assert f"started {fake / 'bin' / 'dockerd'}" in proc.stderr
    assert proc.stdout.splitlines()[-1] == f"docker: {fake / 'bin' / 'docker'}: {ANSWERS}"
    assert run(fake, "--check").returncode == 0  # now nothing is missing


def test_dockerd_missing_beside_a_server_that_answers_is_installed_or_named(fake):
    # the "PATH without dockerd": a server answers (another daemon, this machine's), dockerd is not here
    (fake / "up").touch()
    _write(fake / "bin" / "debootstrap", "#!/bin/sh\n")
    proc = run(fake, "--check")
    assert proc.returncode == 1 and "docker: dockerd is not on PATH (Debian package docker.io)" in proc.stderr
    proc = run(fake, FAKE_NO_DOCKERD="1")  # apt-get installs it where this PATH does not look
    assert proc.returncode == 1 and "docker.io" in apt_calls(fake)
    assert "dockerd is not on PATH after installing docker.io" in proc.stderr and "put /usr/sbin on PATH" in proc.stderr
    proc = run(fake)  # installed on PATH; the server already answers: nothing to start
    assert proc.returncode == 0, proc.stderr
    assert "started" not in proc.stderr and not (fake / "dockerd.pid").exists()


def test_a_daemon_that_never_answers_is_named_after_the_wait(fake):
    _write(fake / "bin" / "dockerd", DOCKERD)  # installed but not running: nothing to install for docker
    proc = run(fake, CXR_DOCKERD_WAIT="2", FAKE_DOCKERD="never")
    assert proc.returncode == 1
    assert "docker.io" not in apt_calls(fake)
    assert f"dockerd ({fake / 'bin' / 'dockerd'}) was started but no Docker server answered in 2 s" in proc.stderr
    assert "Cannot connect to the Docker daemon" in proc.stderr and "by hand:" in proc.stderr


def test_a_daemon_that_exits_is_reported_with_the_end_of_its_log(fake):
    _write(fake / "bin" / "dockerd", DOCKERD)
    proc = run(fake, FAKE_DOCKERD="exits")
    assert proc.returncode == 1
    assert "dockerd exited right after it started" in proc.stderr
    assert "iptables not found" in proc.stderr  # the daemon's own reason, from its log


def test_a_server_that_refuses_the_clients_api_version_is_named(fake):
    refusal = "Error response from daemon: client version 1.41 is too old. Minimum supported API version is 1.44"
    for args in ((), ("--check",)):
        proc = run(fake, *args, FAKE_REFUSE=refusal)
        assert proc.returncode == 1
        assert "the Docker server answers but refuses this client" in proc.stderr and refusal in proc.stderr
        assert "DOCKER_API_VERSION" in proc.stderr
    assert "docker.io" not in apt_calls(fake)  # a daemon answers: installing another would not help


def test_this_machines_docker_client_and_server_agree_on_an_api_version():
    # the real script against the real daemon (CI: after .ci/test's first step installed and started it)
    proc = subprocess.run(["bash", str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs what .ci/system-deps.sh installs: {proc.stderr}")
        pytest.skip(f"this machine lacks a system dependency: {proc.stderr}")
    m = re.search(r"\(API ([\d.]+)\), server .* \(API ([\d.]+), minimum ([\d.]+)\)", proc.stdout)
    assert m, proc.stdout
    client, server, minimum = (tuple(int(x) for x in v.split(".")) for v in m.groups())
    assert minimum <= client <= server  # negotiated: a newer client speaks the server's version


def test_a_missing_library_of_playwrights_driver_is_named_then_installed(fake):
    # a new Debian has no libatomic.so.1, which the node binary in Playwright's wheel loads
    (fake / "libatomic").unlink()
    (fake / "up").touch()  # a Docker server answers
    _write(fake / "bin" / "dockerd", DOCKERD)
    _write(fake / "bin" / "debootstrap", "#!/bin/sh\n")
    proc = run(fake, "--check")
    assert proc.returncode == 1 and "libatomic.so.1: Playwright's driver needs it" in proc.stderr
    assert "apt-get install -y --no-install-recommends libatomic1" in proc.stderr
    proc = run(fake)
    assert proc.returncode == 0, proc.stderr
    assert apt_calls(fake).split() == ["install", "-y", "-q", "--no-install-recommends", "--no-remove", "libatomic1"]
