"""Params that cannot be got wrong silently (issue 32): duplicate keys, strict numbers and booleans, YAML 1.1
oddities, the rules across keys, and ``--set`` read as YAML with the parsed value in every error."""

import shutil
from pathlib import Path

import pytest
import yaml

from components.core.contract import recipes
from components.core.contract.errors import ParamsError
from components.core.contract.params.schema import load_params, parse_params
from cxr.cli import main

ROOT = Path(__file__).resolve().parents[5]


def params_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ParamsError) as exc:
        load_params(params_file(tmp_path, text))
    return str(exc.value)


def error_of(raw) -> str:
    with pytest.raises(ParamsError) as exc:
        parse_params(raw, "params.yaml")
    return str(exc.value)


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- duplicate keys
def test_a_second_data_block_is_refused_naming_both_lines(tmp_path, capsys):
    """The issue's case: kermany-2class applied, then a data: block added at the bottom for the path; the
    second block silently replaced the first and the task became 3-class again."""
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    recipes.apply(["kermany-2class"], path, {"data.source": "kaggle"})
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line == "data:")
    path.write_text(path.read_text() + "\ndata:\n  source: dir\n  path: ../shared/data/cxr-sample\n")
    second = len(lines) + 2
    code, err = cli(capsys, "ingest", "--params", str(path), "--out", str(tmp_path / "raw"))
    assert code == 3
    assert f"line {second}: duplicate key data (first at line {first})" in err and "Traceback" not in err
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("train:\n  image_size: 64\n  batch_size: 8\n  image_size: 32\n",
     "line 4: duplicate key train.image_size (first at line 2)"),
    ("evaluate:\n  target_sensitivity: {COVID19: 0.5, COVID19: 0.6}\n",
     "line 2: duplicate key evaluate.target_sensitivity.COVID19 (first at line 2)"),
    ("train:\n  phases:\n    - {epochs: 1, lr: 0.01, epochs: 5}\n", "duplicate key train.phases.0.epochs"),
    ("review:\n  enabled: false\n  'enabled': true\n", "duplicate key review.enabled"),
    ("split:\n  seed: 1\n  seed: 1\n", "duplicate key split.seed"),  # even when the values agree
])
def test_duplicate_keys_at_any_depth(tmp_path, text, expected):
    assert expected in load_error(tmp_path, text)


def test_merge_keys_override_without_being_duplicates(tmp_path):
    text = ("data:\n  demo: &small {patients_per_class: 4, max_images_per_patient: 1, min_side: 64, max_side: 96}\n"
            "evaluate:\n  external:\n    - name: site-b\n      source: demo\n"
            "      demo:\n        <<: *small\n        seed: 7\n        patients_per_class: 6\n")
    p = load_params(params_file(tmp_path, text))
    ext = p.evaluate.external[0].demo
    assert (ext.patients_per_class, ext.seed, ext.min_side, ext.max_side) == (6, 7, 64, 96)
    assert "a second merge key" in load_error(tmp_path, text.replace("        seed: 7\n", "        <<: *small\n"))


# ---------------------------------------------------------------- strict numbers and booleans
@pytest.mark.parametrize(("text", "expected"), [
    ("validate:\n  max_transparent_share: yes\n",
     "validate.max_transparent_share: expected a number, got yes (YAML 1.1 reads a boolean true"),
    ("train:\n  image_size: true\n", "train.image_size: expected a number, got a boolean true"),
    ("train:\n  phases:\n    - {epochs: true, lr: 0.01}\n", "train.phases.0.epochs: expected a number, got a boolean"),
    ("gate:\n  min_sensitivity: {COVID19: on}\n", "gate.min_sensitivity.COVID19: expected a number, got on"),
    ("split:\n  use_official_test: 1\n", "split.use_official_test: expected true or false, got the number 1"),
    ("train:\n  calibrate: 'yes'\n", "train.calibrate: expected true or false, got the text 'yes'"),
    ("split:\n  seed: '7'\n", "split.seed: expected a number, got the text '7': remove the quotes"),
    ("train:\n  batch_size: 1.5\n", "train.batch_size: expected a whole number, got the number 1.5"),
    ("train:\n  head: {dropout: .nan}\n", "train.head.dropout: expected a finite number, got the number .nan"),
    ("monitor:\n  window_hours: .inf\n", "monitor.window_hours: expected a finite number, got the number .inf"),
    ("registry:\n  model_name: 1e3\n", "registry.model_name: expected text, got the number 1000.0: quote it"),
    ("validate:\n  critical: yes\n", "validate.critical: expected a list"),
])
def test_wrong_types_are_named_not_coerced(tmp_path, text, expected):
    msg = load_error(tmp_path, text)
    assert expected in msg, msg
    assert "below the minimum" not in msg  # true is not 1


@pytest.mark.parametrize(("text", "expected"), [
    ("split:\n  seed: 010\n",
     "split.seed: expected a number, got 010 (YAML 1.1 reads the number 8, YAML 1.2 the number 10)"),
    ("split:\n  seed: 1_000\n", "got 1_000 (YAML 1.1 reads the number 1000, YAML 1.2 the text '1_000')"),
    ("split:\n  seed: 0o17\n", "got 0o17 (YAML 1.1 reads the text '0o17', YAML 1.2 the number 15)"),
    ("monitor:\n  window_hours: 1:30\n", "got 1:30 (YAML 1.1 reads the number 90"),
    ("split:\n  seed: 0b11\n", "got 0b11 (YAML 1.1 reads the number 3"),
])
def test_numbers_yaml_11_and_12_read_differently_are_refused(tmp_path, text, expected):
    msg = load_error(tmp_path, text)
    assert expected in msg and "write it as YAML 1.1 and 1.2 both read it" in msg, msg


def test_yaml_oddities_load_with_the_meaning_written(tmp_path):
    text = ("data:\n  classes: [NO, YES]\n  label_aliases: {no finding: NO, on: YES}\n"
            "  kaggle_dataset: 2024-01-01\n"
            "validate:\n  bias_audit: {enabled: off, max_rows: 1e4}\n"
            "split:\n  seed: 0x10\n  use_official_test: no\n"
            "train:\n  seed: &s 12\n  reduce_lr: {min_lr: 1e-6}\n  lr_find: {min_lr: 1.0e-7, max_lr: 1.0e+0}\n"
            "  mixed_precision: off\n"
            "review:\n  enabled: On\n  image_size: 32\n  seed: *s\n"
            "preprocess:\n  shard_mb: 64\n")
    p = load_params(params_file(tmp_path, text))
    assert p.data.classes == ["NO", "YES"] and p.data.label_aliases == {"no finding": "NO", "on": "YES"}
    assert p.data.kaggle_dataset == "2024-01-01"  # text in YAML 1.2; PyYAML would give a date
    assert p.validate_.bias_audit.enabled is False and p.validate_.bias_audit.max_rows == 10_000
    assert p.split.seed == 16 and p.split.use_official_test is False
    assert p.train.seed == 12 == p.review.seed and p.review.enabled is True
    assert p.train.reduce_lr.min_lr == 1e-6 and p.train.lr_find.max_lr == 1.0
    assert p.train.mixed_precision == "off"  # one of its values, as written (PyYAML: False, refused before)
    assert p.preprocess.shard_mb == 64.0


def test_whole_floats_are_whole_numbers_as_kubeflow_passes_them():
    """A KFP pipeline parameter of type dict passes every number as a float (protobuf Struct)."""
    p = parse_params({"train": {"image_size": 64.0, "phases": [{"epochs": 3.0, "lr": 0.01}]}})
    assert p.train.image_size == 64 and isinstance(p.train.image_size, int) and p.train.phases[0].epochs == 3


def test_params_survive_a_kubeflow_struct():
    """What the KFP tasks get: each section through a protobuf Struct, where every number is a float."""
    from google.protobuf import json_format, struct_pb2

    params = load_params(ROOT / "params.yaml")
    dumped = params.model_dump(mode="json", by_alias=True, exclude_none=True)
    passed = {}
    for section, value in dumped.items():
        struct = struct_pb2.Struct()
        struct.update(value)
        passed[section] = json_format.MessageToDict(struct)
    assert passed["train"]["image_size"] == 64.0 and isinstance(passed["train"]["image_size"], float)
    assert parse_params(passed, "pipeline parameters") == params


@pytest.mark.parametrize(("text", "expected"), [
    ("a: [\n", 'not valid YAML'),
    ("a: !!python/object/apply:os.system [ls]\n", "could not determine a constructor"),
    ("data: {}\n---\ntrain: {}\n", "expected a single document"),
    ("a: &x [1, *x]\n", "a.1 contains itself"),
    ("data: " + "[" * 1000 + "]" * 1000 + "\n", "nested too deeply"),
    ("- data\n", "the top level must be a mapping of sections, got a list"),
])
def test_unreadable_files_are_messages(tmp_path, text, expected):
    assert expected in load_error(tmp_path, text)


def test_a_billion_laughs_is_refused(tmp_path):
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    assert "expands to more than 100000 values" in load_error(tmp_path, text)


def test_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"data:\n  path: caf\xe9\n")
    with pytest.raises(ParamsError, match="not UTF-8 text"):
        load_params(path)


# ---------------------------------------------------------------- rules across keys
@pytest.mark.parametrize(("raw", "expected"), [
    ({"validate": {"min_side": 9000}}, "validate.min_side (9000) must be <= validate.max_side (8192)"),
    ({"validate": {"max_pixels": 100}}, "validate.max_pixels (100) is below validate.min_side² (1024)"),
    ({"validate": {"class_share": {"min": 0.5, "max": 0.4}}},
     "validate.class_share.min (0.5) must be <= validate.class_share.max (0.4)"),
    ({"validate": {"class_share": {"min": 0.4}}}, "validate.class_share.min 0.4 with 3 data.classes"),
    ({"validate": {"class_share": {"max": 0.3}}}, "validate.class_share.max 0.3 with 3 data.classes"),
    ({"data": {"demo": {"min_side": 400}}}, "data.demo.min_side (400) must be <= data.demo.max_side (320)"),
    ({"evaluate": {"external": [{"name": "b", "source": "demo", "demo": {"max_side": 40}}]}},
     "evaluate.external.0.demo.min_side (160) must be <= evaluate.external.0.demo.max_side (40)"),
    ({"validate": {"min_side": 400}}, "data.demo.max_side 320 is below validate.min_side 400"),
    ({"validate": {"max_side": 100}, "data": {"demo": {"min_side": 120, "max_side": 140}}},
     "data.demo.min_side 120 is above validate.max_side 100"),
    ({"evaluate": {"target_sensitivity": {"COVID19": 1.0}}}, "never exists for a target of 1"),
    ({"evaluate": {"target_sensitivity": {"COVID19": 0.99}}},
     "evaluate.target_sensitivity.COVID19 0.99 needs at least 99 COVID19 patients in the validation split"),
    ({"train": {"phases": [{"epochs": 0, "lr": 0.01}]}},
     "train.phases.0.epochs: Input should be greater than or equal to 1"),
    ({"train": {"lr_find": {"min_lr": 0.5, "max_lr": 0.1}}},
     "train.lr_find.min_lr (0.5) must be below train.lr_find.max_lr (0.1)"),
    ({"split": {"val_fraction": 0.5, "test_fraction": 0.45}}, "split.val_fraction + split.test_fraction must be < 0.9"),
    ({"evaluate": {"shortcut": {"central_field": {"left": 0.96}}}},
     "evaluate.shortcut.central_field.left (0.96) must be below evaluate.shortcut.central_field.right (0.95)"),
    ({"monitor": {"ood_false_alarm": 0.2}}, "monitor.max_ood_rate (0.15) must be above monitor.ood_false_alarm (0.2)"),
    ({"monitor": {"ood_false_alarm": 0.3, "max_ood_rate": 0.4}},
     "monitor.canary.max_ood_rate (0.25) must be above monitor.ood_false_alarm (0.3)"),
    ({"monitor": {"min_live_sensitivity": {"TB": 0.5}}},
     "monitor.min_live_sensitivity names classes not in data.classes"),
    ({"evaluate": {"external": [{"name": "b", "source": "dir", "path": "x"}]},
      "gate": {"external": {"b": {"min_sensitivity": {"COVID19": 0.5}}}}},
     "gate.external.b.min_sensitivity names ['COVID19'], which have no operating point: add them to "
     "evaluate.target_sensitivity"),
    ({"gate": {"external": {"b": {"min_sensitivity": {"NORMAL": 1.5}}}},
      "evaluate": {"external": [{"name": "b", "source": "dir", "path": "x"}]}}, "NORMAL must be within 0..1"),
    ({"data": {"exclude_labels": ["covid-19"]}}, "data.exclude_labels drops ['COVID19'], which data.classes"),
    ({"review": {"enabled": True, "image_size": 128}, "train": {"image_size": 64}},
     "review.image_size 128 is above train.image_size 64"),
    ({"evaluate": {"external": [{"name": "b", "source": "dir", "path": "x", "label_aliases": {"tb": "TB"}}]}},
     "evaluate.external 'b': label_aliases map to labels not in data.classes"),
])
def test_rules_across_keys_name_both_keys(raw, expected):
    msg = error_of(raw)
    assert expected in msg, msg


def test_the_kermany_recipe_is_checked_against_the_rest_of_the_file(tmp_path, capsys):
    """A recipe's classes meet keys it does not set: a live-sensitivity floor for a class it drops."""
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    path.write_text(path.read_text().replace("  min_live_sensitivity: {}", "  min_live_sensitivity: {COVID19: 0.8}"))
    before = path.read_text()
    code, err = cli(capsys, "recipe", "apply", "kermany-2class", "--params", str(path), "--set", "data.source=kaggle")
    assert code == 3 and path.read_text() == before
    assert "monitor.min_live_sensitivity names classes not in data.classes ['NORMAL', 'PNEUMONIA']: ['COVID19']" \
        in err


def test_the_kermany_recipe_on_the_demo_is_refused_before_training(capsys, tmp_path):
    """Its 0.95 needs 19 PNEUMONIA validation patients; the demo has about 6: evaluate would fail after training."""
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    code, err = cli(capsys, "recipe", "apply", "kermany-2class", "--params", str(path))
    assert code == 3 and "evaluate.target_sensitivity.PNEUMONIA 0.95 needs at least 19 PNEUMONIA patients" in err
    assert "or use real data (data.source: dir or kaggle)" in err


def test_a_demo_target_its_validation_split_cannot_keep_is_refused():
    """The demo's validation split holds 6-7 patients of a class: 0.95 needs 19 (the demo recipe's note)."""
    repo = yaml.safe_load((ROOT / "params.yaml").read_text())
    repo["evaluate"]["target_sensitivity"] = {"COVID19": 0.95, "PNEUMONIA": 0.85}
    msg = error_of(repo)
    assert "evaluate.target_sensitivity.COVID19 0.95 needs at least 19 COVID19 patients" in msg
    assert "data.demo.patients_per_class 40, split.test_fraction 0.2 and split.val_fraction 0.15 it holds about 6.4" \
        in msg and "PNEUMONIA" not in msg


@pytest.mark.parametrize("demo", [{"patients_per_class": 40, "max_images_per_patient": 3},
                                  {"patients_per_class": 12, "max_images_per_patient": 2},
                                  {"patients_per_class": 100, "max_images_per_patient": 1, "label_noise": 0.1}])
def test_the_demo_validation_bound_holds_for_the_real_split(demo):
    """The bound the target rule uses, against the split step's own carving of the demo's patients."""
    import pandas as pd

    from components.core.contract.params.schema import demo_val_patients
    from components.core.data import synthetic
    from components.split import carve

    p = parse_params({"data": {"demo": demo}, "split": {"test_fraction": 0.2}})
    d, classes = p.data.demo, p.data.classes
    flips = synthetic.planted_flips(classes, d.patients_per_class, d.label_noise, d.seed)
    rows = [{"path": f"{pid}", "label": flips.get(synthetic.patient_id(pid), (None, c))[1],
             "patient_id": synthetic.patient_id(pid)}
            for pid, c in enumerate(c for c in classes for _ in range(d.patients_per_class))]
    df = pd.DataFrame(rows)
    rest, _ = carve(df, p.split.test_fraction, p.split.seed, "test")
    _, val = carve(rest, p.split.val_fraction / (1 - p.split.test_fraction), p.split.seed + 1, "val")
    expected, most = demo_val_patients(p)
    counts = val.groupby("label")["patient_id"].nunique()
    assert counts.max() <= most and abs(counts.mean() - expected) < expected / 2 + 1, (counts.to_dict(), expected)


def test_min_positive_patients_agrees_with_the_threshold_rule():
    from components.core.contract.params.evaluate import min_positive_patients
    from components.core.stats import clinical

    for target in [0.01, 0.3, 0.5, 0.5 + 1e-12, 0.6, 2 / 3, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.999]:
        assert min_positive_patients(target) == clinical.min_positive_patients(target), target


def test_the_repo_params_and_every_recipe_still_load():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in recipes.names():
        real = {"data": {"source": "kaggle"}} if name == "kermany-2class" else {}  # a real-data task
        parse_params(recipes.overlay(recipes.overlay(base, real), recipes.load(name).overlay), name)


# ---------------------------------------------------------------- --set
def test_set_errors_show_the_value_as_read(tmp_path, capsys):
    path = params_file(tmp_path, (ROOT / "params.yaml").read_text())
    code, err = cli(capsys, "split", "--params", str(path), "--set", "validate.min_side=9000", "--set", "split.seed=3")
    assert code == 3
    assert "validate.min_side (9000) must be <= validate.max_side (8192)" in err
    assert "(--set validate.min_side=9000 was read as YAML: the number 9000)" in err and "split.seed=3" not in err
    code, err = cli(capsys, "train", "--params", str(path), "--set", "train.image_size=true")
    assert code == 3 and "train.image_size: expected a number, got a boolean true" in err
    assert "(--set train.image_size=true was read as YAML: a boolean true)" in err


def test_a_reason_with_a_colon_is_a_mapping_unless_quoted(tmp_path, capsys):
    path = params_file(tmp_path, (ROOT / "params.yaml").read_text())
    reason = "Dr. A: the sample has no patient ids, accepted for the demo"
    code, err = cli(capsys, "recipe", "apply", "demo", "--params", str(path), "--dry-run",
                    "--set", f"validate.accept_missing_patient_ids={reason}")
    assert code == 3
    assert "validate.accept_missing_patient_ids: expected text, got a mapping {'Dr. A':" in err
    assert f"for the text itself, quote it: --set 'validate.accept_missing_patient_ids=\"{reason}\"'" in err
    assert main(["recipe", "apply", "demo", "--params", str(path), "--set",
                 f'validate.accept_missing_patient_ids="{reason}"']) == 0
    assert load_params(path).validate_.accept_missing_patient_ids == reason


def test_set_yes_writes_the_boolean_it_means(tmp_path):
    path = params_file(tmp_path, (ROOT / "params.yaml").read_text())
    assert main(["recipe", "apply", "demo", "--params", str(path), "--set", "review.enabled=yes",
                 "--set", "review.image_size=32"]) == 0
    assert "  enabled: true" in path.read_text() and load_params(path).review.enabled is True


@pytest.mark.parametrize(("item", "expected"), [
    ("train.image_size=[", "--set train.image_size=[: not valid YAML"),
    ("train.head={dropout: 0.1, dropout: 0.2}", "duplicate key dropout"),
    ("train..image_size=3", "the key 'train..image_size' has an empty part"),
    ("=3", "the key '' has an empty part"),
    ("train.phases.0.epochs=3", "train.phases is a list, not a mapping of keys: set train.phases itself"),
])
def test_bad_set_items_are_messages(capsys, item, expected):
    code, err = cli(capsys, "split", "--params", str(ROOT / "params.yaml"), "--set", item)
    assert code == 3 and expected in err and "Traceback" not in err


def test_a_key_set_twice_is_refused(capsys):
    code, err = cli(capsys, "split", "--set", "split.seed=1", "--set", "split.seed=2")
    assert code == 3 and "--set split.seed is given twice ('1', then '2')" in err


def test_help_says_values_are_read_as_yaml(capsys):
    for argv in (["split", "--help"], ["recipe", "apply", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = " ".join(capsys.readouterr().out.split())
        assert "VALUE is read as YAML" in out and "quote text that has ': '" in out
