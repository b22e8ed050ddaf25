import subprocess
import sys

from benchmarks.processes import env
from cxr.cli import build_parser, commands, main


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for name, help_text, _, _ in commands():
        assert name in out and help_text.split()[0] in out


def test_each_command_has_help():
    parser = build_parser()
    for name, *_ in commands():
        try:
            parser.parse_args([name, "--help"])
        except SystemExit as e:
            assert e.code == 0


def test_cli_import_does_not_load_heavy_libraries():
    code = ("import sys, cxr.cli; cxr.cli.build_parser(); "
            "print(sorted(m for m in ('tensorflow','keras','great_expectations','mlflow','kfp','pandas') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True)
    assert out.stdout.strip() == "[]"


def test_user_error_is_a_message_not_a_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  source: dir\n")
    proc = subprocess.run([sys.executable, "-m", "cxr", "ingest", "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "raw")], capture_output=True, text=True, env=env())
    assert proc.returncode == 3  # bad params (2 is argparse's usage error)
    assert "data.path is required" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "raw").exists()


def test_set_override_needs_key_value(tmp_path, capsys):
    assert main(["split", "--set", "oops"]) == 3
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_spec_show_kfp_prints_the_components_real_source():
    """``cxr spec show --kfp STEP``: the functions in pipelines/components/<step>.py, each under its file and line
    (a partitioned step: its part's component, then its merge). In a process of its own: under xdist, something
    an earlier test left running in the worker wrote blanks into the captured stdout (seen twice in the fresh CI,
    not found)."""
    import re
    from pathlib import Path

    done = subprocess.run([sys.executable, "-m", "cxr", "spec", "show", "--kfp", "preprocess"], capture_output=True,
                          text=True, env=env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    lines = (Path(__file__).resolve().parents[2] / "pipelines" / "components" / "preprocess.py").read_text()
    header = r"^# (pipelines/components/preprocess\.py):(\d+)\n"
    found = re.findall(header + r"(def \w+\(.*?)(?=\n\n\n# |\Z)", out, re.M | re.S)
    assert [f[2].split("(")[0] for f in found] == ["def preprocess_partition", "def preprocess"]
    for _, line, source in found:
        assert lines.splitlines()[int(line) - 1:][: source.count("\n") + 1] == source.splitlines()
    assert found[1][2].rstrip().endswith("return run_task('preprocess', locals(), phase='merge')")
