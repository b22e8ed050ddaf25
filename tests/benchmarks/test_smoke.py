"""The benchmark scripts at tiny sizes, so they do not rot (no timing assertions)."""

import pytest

from benchmarks import (
    inference,
    input_pipeline,
    label_review,
    load,
    orchestration,
    pixels,
    recipes,
    train_step,
    validation,
)

pytestmark = pytest.mark.slow


def test_input_pipeline(shared_sample, capsys):
    input_pipeline.main(["--files", "30", "--size", "32", "--epochs", "2", "--batch", "8"])
    out = capsys.readouterr().out
    assert "(a) ImageDataGenerator" in out and "(c) ours" in out and "ratio vs (a)" in out


def test_train_step(shared_sample, capsys):
    train_step.main(["--configs", "small_cnn@32", "--images", "32", "--epochs", "2", "--batch", "8",
                     "--trainable", "all"])
    out = capsys.readouterr().out
    assert "small_cnn@32" in out and "cached features" in out


def test_validation(shared_sample, capsys):
    validation.main(["--files", "40", "--workers", "1", "2"])
    assert "ratio vs 1 worker" in capsys.readouterr().out


def test_pixels(shared_sample, capsys):
    pixels.main(["--files", "3", "--sizes", "32"])
    out = capsys.readouterr().out
    assert "draft CPU ms/img" in out and "| marker | robust window |" in out


def test_orchestration_kfp_part(capsys):
    orchestration.main(["--skip-dvc", "--tasks", "2"])
    assert "per task" in capsys.readouterr().out


def test_inference(shared_sample, capsys):
    inference.main(["--configs", "small_cnn@32", "--images", "12", "--requests", "3"])
    out = capsys.readouterr().out
    assert "p95 ms" in out and "cxr predict" in out


def test_load(shared_sample, capsys):
    load.main(["--requests", "20", "--concurrency", "2", "--backbone", "small_cnn", "--size", "32"])
    out = capsys.readouterr().out
    assert "p99 ms" in out and "RSS" in out


def test_recipes(capsys):
    recipes.main(["--data", "demo", "--recipes", "before", "kermany-2class", "--epochs", "1", "--size", "32",
                  "--demo-patients", "6", "--gpu-recipes", "seed2-fastai"])
    out = capsys.readouterr().out
    assert "| demo | kermany-2class | small_cnn@32 | 2 |" in out and "macro F1 [95% CI]" in out
    assert "seed2-fastai | resnet34@224" in out and "unverified" in out


def test_scale(capsys, tmp_path):
    import json

    from benchmarks import scale

    # one size, 4 demo patients per class: each stage's child process costs its imports whatever the size; the
    # growth table (two sizes) is rendered from the measured size and a copy of it at twice the images. The
    # source-bias audit and the worker pools of validate/preprocess (seconds each, nothing the script reads
    # differently) are off through --set, which this also runs
    scale.main(["--sizes", "48", "--no-dvc", "--json", str(tmp_path / "scale.json"), "--set", "validate.workers=1",
                "preprocess.workers=1", "validate.bias_audit={enabled: false}", "train.calibrate=false",
                "train.refresh_batchnorm=0"])
    out = capsys.readouterr().out
    assert "peak RSS MiB" in out and "epoch img/s" in out and "growth" not in out
    (measured,) = json.loads((tmp_path / "scale.json").read_text())
    n = measured["images"]
    assert f"growth {n} → {2 * n} images (x2.0)" in scale.report([measured, {**measured, "images": 2 * n}])


def test_small_n(capsys):
    from benchmarks import small_n

    small_n.main(["--quick", "--ns", "8", "20"])
    out = capsys.readouterr().out
    assert "Clopper-Pearson" in out and "Tango min" in out and "conformal" in out and "80% power" in out
    assert "calibrated reference: flagged" in out


def test_label_review(capsys):
    """benchmarks/resnet34_converter.py needs a Python with PyTorch (not in the locks): no smoke run."""
    label_review.main(["--noise", "0.2", "--seeds", "1", "--patients", "6", "--epochs", "1", "--size", "32",
                       "--demo-seeds", "3", "--noise-models", "similar", "--retrain"])
    out = capsys.readouterr().out
    assert '"review_to_one_training"' in out and "| noise | demo seed | planted (train+val) |" in out
    assert "precision@10" in out and "| similar | 3 |" in out and "| clean set acc. run 1 |" in out


def test_label_review_on_real_films(shared_sample, capsys):
    label_review.main(["--sample", str(shared_sample), "--seeds", "1", "--epochs", "1", "--size", "32", "--top", "3"])
    out = capsys.readouterr().out
    assert '"review_to_one_training"' in out and "| rank | path | patient | given | suggested |" in out
