"""`cxr predict` accounts for every input (issue 23): names that are not UTF-8, refused inputs, exit codes
0 / 4 / 7 with one summary line on stderr, CSV rows read like ingest's, and rows streamed as they are made.
Issue 32: only regular files and folders, serve's byte limit, any decode failure a row, every skipped file
named, backslashes read as ingest reads them, films with nothing in them refused."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmarks.processes import env
from components.core.contract.errors import EXIT_DATA, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, DataError
from components.core.data.images import DEFAULT_MAX_BYTES
from components.core.registry import registry
from cxr import cli
from serving import predict
from serving.service import Settings
from tests.imagegen import (
    encode,
    film,
    float_tiff_with_nan,
    garbled_jpeg,
    gray,
    half_transparent_png,
    multipage_tiff,
    write_tree,
)
from tests.support import tiny_params, write_params


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return registry.load(str(tiny_model_dir))


def read(path):
    return pd.read_csv(path, keep_default_na=False).set_index("path")


def test_a_non_utf8_name_is_percent_encoded_and_the_rest_of_the_run_kept(bundle, tmp_path):
    d = write_tree(tmp_path / "in", {"ok.png": encode(gray(64, 64)), "tiny.png": encode(gray(1, 1)),
                                     "pages.tiff": multipage_tiff(3), "garbled.jpeg": garbled_jpeg(),
                                     "alpha.png": half_transparent_png(), ".DS_Store": b"\0\0\0\1Bud1",
                                     "._ok.png": b"\0\5\26\7", "notes.txt": b"text"})
    with open(os.path.join(os.fsencode(d), b"caf\xe9.png"), "wb") as fh:
        fh.write(encode(gray(64, 64, seed=3)))
    summary = predict.run(bundle, d, tmp_path / "preds.csv", workers=1)
    df = read(tmp_path / "preds.csv")
    assert sorted(df.index) == ["alpha.png", "caf%E9.png", "garbled.jpeg", "ok.png", "pages.tiff", "tiny.png"]
    assert df.loc["caf%E9.png", "predicted_label"] and df.loc["caf%E9.png", "note"].startswith("non_utf8_name")
    assert df.loc["pages.tiff", "predicted_label"] and df.loc["pages.tiff", "note"] == (
        "multi_frame: 3 frames, frame 0 used")
    assert df.loc["garbled.jpeg", "error"] == (
        "corrupt_data: libjpeg: Corrupt JPEG data: premature end of data segment")
    assert df.loc["alpha.png", "error"] == ("transparent_pixels: 50.0% of the film has alpha < 128 (limit 1.0%, "
                                            "validate.max_transparent_share)")
    assert summary["predicted"] == 3 and summary["renamed"] == 1
    assert summary["refused"] == {"corrupt_data": 1, "too_small": 1, "transparent_pixels": 1}
    assert summary["skipped"]["by_reason"] == {"hidden_file": 2, "not_an_image_name": 1}
    code, line = predict.outcome(summary)
    assert code == EXIT_PARTIAL and line.startswith("3 of 6 inputs predicted, 3 refused (corrupt_data 1, ")
    assert not (tmp_path / "preds.csv.partial").exists()


def test_csv_rows_are_read_like_ingest_and_each_gets_a_row(bundle, tmp_path):
    d = write_tree(tmp_path / "in", {"a.png": encode(gray(64, 64)), "x, y.png": encode(gray(64, 64, seed=1))})
    write_tree(tmp_path, {"secret.png": encode(gray(64, 64, seed=9))})
    os.symlink("../secret.png", d / "link.png")
    rows = ["path,id", "a.png,1", '"x, y.png",2', "../secret.png,3", "link.png,4", "missing.png,5", ",6",
            "a.png,7,surplus"]
    (d / "list.csv").write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode())
    summary = predict.run(bundle, d / "list.csv", tmp_path / "preds.csv", workers=1)
    df = read(tmp_path / "preds.csv")
    errors = {p: e.split(":")[0] for p, e in df["error"].items()}
    assert errors == {"a.png": "", "x, y.png": "", "../secret.png": "outside_root", "link.png":
                      "link_outside_data_folder", "missing.png": "missing_file", "list.csv:7": "empty_path",
                      "list.csv:8": "malformed_row"}
    assert summary["images"] == 7 and summary["predicted"] == 2


@pytest.mark.parametrize("files, code", [
    ({"a.png": encode(gray(64, 64)), "b.png": encode(gray(64, 64, seed=1))}, EXIT_OK),
    ({"a.png": encode(gray(1, 1)), "b.png": b"not an image"}, EXIT_DATA),
    ({"a.png": encode(gray(64, 64)), "b.png": encode(gray(1, 1))}, EXIT_PARTIAL),
])
def test_exit_code_says_whether_every_input_got_a_prediction(tiny_model_dir, tmp_path, capsys, files, code):
    d = write_tree(tmp_path / "in", files)
    pf = write_params(tmp_path / "params.yaml", tiny_params())
    rc = cli.main(["predict", "--params", str(pf), "--model", str(tiny_model_dir), "--input", str(d),
                   "--output", str(tmp_path / "preds.csv")])
    err = capsys.readouterr().err
    assert rc == code
    assert len(read(tmp_path / "preds.csv")) == 2  # written whatever the outcome
    (line,) = [x for x in err.splitlines() if x.startswith("cxr predict: ")]
    assert line.endswith(f"(exit {code}: {({0: 'ok', 4: 'none predicted', 7: 'partial'})[code]})")


@pytest.mark.slow
def test_an_interrupted_run_keeps_its_rows_and_the_previous_output(tiny_model_dir, tmp_path):
    """SIGINT once the first block is written: exit 130, preds.csv as it was, the rows so far in preds.csv.partial."""
    d = write_tree(tmp_path / "in", {"film.jpeg": encode(film(1200, 1200), "JPEG")})
    pd.DataFrame({"path": ["film.jpeg"] * 4000}).to_csv(d / "list.csv", index=False)  # seconds of decoding
    (tmp_path / "preds.csv").write_text("earlier run\n")
    pf = write_params(tmp_path / "params.yaml", tiny_params())
    partial = tmp_path / "preds.csv.partial"
    cmd = [sys.executable, "-m", "cxr", "predict", "--params", str(pf), "--model", str(tiny_model_dir), "--input",
           str(d / "list.csv"), "--output", str(tmp_path / "preds.csv")]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start = time.time()
    while time.time() - start < 180 and proc.poll() is None:
        if partial.exists() and partial.read_text().count("\n") > 1:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err and "preds.csv.partial" in err
    assert (tmp_path / "preds.csv").read_text() == "earlier run\n"
    rows = pd.read_csv(partial, keep_default_na=False)
    assert 0 < len(rows) < 4000 and (rows["predicted_label"] != "").all()


# ---------------------------------------------------------------- issue 32: predict's inputs
@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (never hang) when the block runs longer than ``seconds``."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_or_a_device_as_input_is_refused_unopened(bundle, tiny_model_dir, tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with deadline(30), pytest.raises(DataError, match="is neither a regular file nor a folder"):
        predict.run(bundle, fifo, tmp_path / "preds.csv", workers=1)  # a FIFO without a writer blocked for ever
    pf = write_params(tmp_path / "params.yaml", tiny_params())
    rc = cli.main(["predict", "--params", str(pf), "--model", str(tiny_model_dir), "--input", "/dev/zero",
                   "--output", str(tmp_path / "preds.csv")])
    assert rc == EXIT_DATA and not (tmp_path / "preds.csv").exists()
    assert ("--input /dev/zero is neither a regular file nor a folder (a FIFO, device or socket): give an image, "
            "a folder of images, or a CSV with a path column") in capsys.readouterr().err


def test_a_file_over_the_upload_limit_is_refused_before_it_is_read(bundle, tiny_model_dir, tmp_path, capsys,
                                                                   monkeypatch):
    d = write_tree(tmp_path / "in", {"ok.png": encode(gray(64, 64))})
    with open(d / "huge.png", "wb") as fh:  # a PNG padded (sparse) past serve's upload limit
        fh.write(encode(gray(64, 64, seed=1)))
        fh.truncate(DEFAULT_MAX_BYTES + 1)
    predict.run(bundle, d, tmp_path / "preds.csv", workers=1)
    df = read(tmp_path / "preds.csv")
    assert df.loc["huge.png", "error"] == (f"too_large: the file is {DEFAULT_MAX_BYTES + 1} bytes > limit "
                                           f"{DEFAULT_MAX_BYTES} (CXR_MAX_UPLOAD_BYTES)")
    assert df.loc["ok.png", "predicted_label"]
    monkeypatch.setenv("CXR_MAX_UPLOAD_BYTES", "1000")  # the variable that sets serve's limit sets predict's
    assert Settings.from_env().max_bytes == 1000
    pf = write_params(tmp_path / "params.yaml", tiny_params())
    rc = cli.main(["predict", "--params", str(pf), "--model", str(tiny_model_dir), "--input", str(d / "ok.png"),
                   "--output", str(tmp_path / "one.csv")])
    assert rc == EXIT_DATA
    size = (d / "ok.png").stat().st_size
    assert read(tmp_path / "one.csv").loc["ok.png", "error"] == (
        f"too_large: the file is {size} bytes > limit 1000 (CXR_MAX_UPLOAD_BYTES)")


def test_a_memory_error_while_decoding_is_a_row_not_a_traceback(tmp_path):
    """A 36-megapixel film (within validate.max_pixels) decoded with 24 MiB to spare."""
    big = tmp_path / "big.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 6000).astype(np.uint8), (6000, 1))).save(big)
    code = textwrap.dedent(f"""
        import resource
        from components.core.data import images
        limits = images.Limits()
        vm = next(int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 24 * 2**20, vm + 24 * 2**20))
        print(images.load_file({str(big)!r}, 32, "crop", limits.max_pixels, limits).error)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stdout.strip() == ("out_of_memory: decoding needed more memory than this process could get "
                                  "(MemoryError)")


def test_every_skipped_file_is_named_in_the_skipped_csv(bundle, tmp_path):
    """A Kaggle zip's __MACOSX/ and AppleDouble files: more than the summary's 10 examples, all named."""
    d = write_tree(tmp_path / "in", {"ok.png": encode(gray(64, 64)),
                                     **{f"._scan{i:02}.png": b"\0\5\26\7" for i in range(14)},
                                     "__MACOSX/._ok.png": b"\0\5\26\7", "notes.txt": b"text"})
    summary = predict.run(bundle, d, tmp_path / "preds.csv", workers=1)
    listed = pd.read_csv(tmp_path / "preds.csv.skipped.csv", keep_default_na=False)
    assert list(listed.columns) == ["path", "reason", "detail"]
    assert len(listed) == summary["skipped"]["count"] == 16 and len(summary["skipped"]["examples"]) == 10
    assert set(listed["path"]) == {f"._scan{i:02}.png" for i in range(14)} | {"__MACOSX/", "notes.txt"}
    assert summary["skipped"]["file"] == str(tmp_path / "preds.csv.skipped.csv")
    assert predict.outcome(summary)[1].endswith(f"each listed in {tmp_path / 'preds.csv.skipped.csv'}) → "
                                                f"{tmp_path / 'preds.csv'} (exit 0: ok)")


def test_csv_paths_with_backslashes_are_read_by_ingests_rule(bundle, tmp_path):
    d = write_tree(tmp_path / "in", {"sub/a.png": encode(gray(64, 64)), "sub/b.png": encode(gray(64, 64, seed=1))})
    (d / "list.csv").write_text("path\nsub\\a.png\nsub/b.png\n")
    summary = predict.run(bundle, d / "list.csv", tmp_path / "preds.csv", workers=1)
    df = read(tmp_path / "preds.csv")
    assert summary["predicted"] == 2 and df.loc["sub\\a.png", "note"] == "backslash_path: read as sub/a.png"
    assert summary["renamed"] == 0  # read differently, not percent-encoded


def test_films_with_nothing_in_them_are_refused(bundle, tmp_path):
    d = write_tree(tmp_path / "in", {"ok.png": encode(gray(64, 64)), "black.png": encode(np.zeros((64, 64), np.uint8)),
                                     "nan.tiff": float_tiff_with_nan()})
    summary = predict.run(bundle, d, tmp_path / "preds.csv", workers=1)
    df = read(tmp_path / "preds.csv")
    assert df.loc["black.png", "error"] == ("blank_film: pixel standard deviation 0.00 < limit 2 grey levels "
                                            "(validate.min_pixel_std): the film shows nothing")
    assert df.loc["nan.tiff", "error"] == ("non_finite_pixels: 256 of 4096 pixels (6.2%) are NaN or infinite (a float "
                                           "image with missing data)")
    assert summary["refused"] == {"blank_film": 1, "non_finite_pixels": 1}
