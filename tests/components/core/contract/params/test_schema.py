"""The params schema (components/core/contract/params/): every section, the rules across sections, loading."""

from pathlib import Path

import pytest

from components.core.contract.errors import ParamsError
from components.core.contract.params.schema import apply_overrides, load_params, parse_params

ROOT = Path(__file__).resolve().parents[5]


def error_of(raw) -> str:
    with pytest.raises(ParamsError) as exc:
        parse_params(raw, "params.yaml")
    return str(exc.value)


def test_repo_params_yaml_is_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.data.source == "demo"
    assert p.validate_.workers >= 1


def test_typo_key_names_path_and_allowed_keys():
    msg = error_of({"data": {"sourse": "demo"}})
    assert "data.sourse: unknown key" in msg
    assert "source" in msg and "classes" in msg  # the allowed keys


def test_typo_top_level_section():
    msg = error_of({"trian": {}})
    assert "trian: unknown key" in msg and "train" in msg


def test_unknown_source_lists_allowed_values():
    msg = error_of({"data": {"source": "s3"}})
    assert "data.source" in msg and "'demo', 'dir' or 'kaggle'" in msg and "'s3'" in msg


def test_fraction_outside_range():
    msg = error_of({"split": {"val_fraction": 1.5}})
    assert "split.val_fraction" in msg and "less than 1" in msg


def test_fractions_leave_nothing_to_train():
    msg = error_of({"split": {"val_fraction": 0.5, "test_fraction": 0.45}})
    assert "split.val_fraction + split.test_fraction" in msg


def test_unknown_backbone():
    msg = error_of({"train": {"backbone": "resnet18"}})
    assert "train.backbone" in msg and "vgg16" in msg and "resnet50" in msg and "resnet34" in msg


def test_empty_class_list():
    assert "data.classes" in error_of({"data": {"classes": []}})


def test_missing_data_path_for_dir():
    assert "data.path is required" in error_of({"data": {"source": "dir"}})


def test_wrong_type():
    msg = error_of({"train": {"batch_size": "big"}})
    assert "train.batch_size" in msg and "'big'" in msg


def test_phase_trainable_last_zero_and_image_size_below_minimum():
    assert "last:N" in error_of({"train": {"phases": [{"epochs": 1, "trainable": "last:0", "lr": 0.001}]}})
    assert "minimum 32" in error_of({"train": {"image_size": 16}})


def test_alias_to_unknown_class():
    assert "label_aliases" in error_of({"data": {"classes": ["NORMAL", "PNEUMONIA"], "label_aliases": {"x": "TB"}}})


def test_yaml_syntax_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_overrides_apply_dotted_keys(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("split:\n  seed: 1\n")
    p = load_params(f, {"split.seed": 7, "train.image_size": 64})
    assert p.split.seed == 7 and p.train.image_size == 64
    assert apply_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}


def test_data_layout_and_kaggle_competitions():
    p = parse_params({"data": {"source": "kaggle", "kaggle_dataset": "competitions/siim-covid19-detection",
                               "layout": "siim"}})
    assert p.data.layout == "siim" and parse_params({}).data.layout == "auto"
    with pytest.raises(ParamsError, match=r"data\.layout.*'auto', 'classes', 'rsna' or 'siim'"):
        parse_params({"data": {"layout": "nih"}})
    for bad in ("chest-xray", "a/b/c", "competitions/"):
        with pytest.raises(ParamsError, match=r"owner/dataset' or 'competitions/<slug>'"):
            parse_params({"data": {"source": "kaggle", "kaggle_dataset": bad}})


def test_phase_lr_forms():
    from components.core.contract.params.train import Phase

    fastai = Phase(epochs=1, trainable="all", lr=[1e-5, 1e-3])
    assert fastai.lr == pytest.approx(1e-3) and fastai.lr_mult == pytest.approx(100)
    assert Phase(epochs=1, lr="auto").lr == "auto"
    assert Phase(epochs=1, lr=0.01, schedule="one_cycle").warmup_fraction == 0.25  # fastai's pct_start
    assert "[low, high]" in error_of({"train": {"phases": [{"epochs": 1, "lr": [1e-3, 1e-5]}]}})
    assert "lr_mult" in error_of({"train": {"phases": [{"epochs": 1, "lr": [1e-5, 1e-3], "lr_mult": 10}]}})
    assert "warmup applies to schedule" in error_of({"train": {"phases": [{"epochs": 1, "lr": 0.01, "warmup": 0.1}]}})
    assert "train_bn" in error_of({"train": {"phases": [{"epochs": 1, "lr": 0.01, "cache_features": True,
                                                          "train_bn": True}]}})
    assert "train.phases.0.schedule" in error_of({"train": {"phases": [{"epochs": 1, "lr": 0.01, "schedule": "step"}]}})


def test_incoherent_training_combinations_are_warned_about():
    def warnings(**train):
        return parse_params({"train": train}).train.warnings()

    destroy = warnings(backbone="resnet50", phases=[{"epochs": 3, "trainable": "all", "lr": 3e-3}])
    assert any("destroy pretrained features" in w and "phases[1]" in w for w in destroy)
    assert not warnings(backbone="resnet50", phases=[{"epochs": 3, "trainable": "all", "lr": [1e-5, 1e-3]}])
    tiny_bn = warnings(backbone="resnet50", batch_size=8, freeze_batchnorm=False,
                       phases=[{"epochs": 3, "trainable": "all", "lr": 1e-4}])
    assert any("fewer than 16 images" in w for w in tiny_bn)
    frozen_bn = warnings(backbone="resnet50", batch_size=16,
                         phases=[{"epochs": 1, "trainable": "head", "lr": 1e-3, "train_bn": True}])
    assert any("frozen backbone with its BatchNorm layers in training mode" in w for w in frozen_bn)
    random_head = warnings(backbone="small_cnn", weights="none", phases=[{"epochs": 3, "trainable": "head",
                                                                          "lr": 1e-3}])
    assert any("convolutions stay random" in w for w in random_head)
    assert any("refresh_batchnorm" in w for w in warnings(
        backbone="small_cnn", weights="none", freeze_batchnorm=False, refresh_batchnorm=0,
        phases=[{"epochs": 3, "trainable": "all", "lr": 1e-3}]))
    assert any("one-cycle" in w for w in warnings(
        phases=[{"epochs": 10, "trainable": "last:6", "lr": 1e-4, "schedule": "one_cycle"}]))
    assert warnings() == []  # the schema default (seed 1) is coherent


def test_a_synthetic_external_set_applies_to_demo_data_only_unless_asked_for():
    from components.core.contract.params.evaluate import applicable_external

    demo_set = {"name": "demo-site-b", "source": "demo", "demo": {"patients_per_class": 4, "seed": 7}}
    real = {"source": "dir", "path": "../shared/data/cxr-sample"}
    assert [e.name for e in applicable_external(parse_params({"evaluate": {"external": [demo_set]}}))] == [
        "demo-site-b"]
    assert applicable_external(parse_params({"data": real, "evaluate": {"external": [demo_set]}})) == []
    asked = parse_params({"data": real, "evaluate": {"external": [{**demo_set, "with_real_data": True}]}})
    assert [e.name for e in applicable_external(asked)] == ["demo-site-b"]
    with pytest.raises(ParamsError, match=r"not used with data\.source 'dir'"):
        parse_params({"data": real, "evaluate": {"external": [demo_set]}, "gate": {"external": {"demo-site-b": {}}}})


def test_a_moved_key_says_where_it_went():
    text = error_of({"scale": {"shard_mb": 8}})
    assert "scale.shard_mb: moved to preprocess.shard_mb" in text
