from pathlib import Path

import pytest

from components.core.config import apply_overrides, load_params, parse_params
from components.core.errors import ParamsError

ROOT = Path(__file__).resolve().parents[2]


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
    assert "val_fraction + test_fraction" in error_of({"split": {"val_fraction": 0.5, "test_fraction": 0.45}})


def test_unknown_backbone():
    msg = error_of({"train": {"backbone": "resnet34"}})
    assert "train.backbone" in msg and "vgg16" in msg and "resnet50" in msg


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
