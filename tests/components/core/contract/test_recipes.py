"""Named recipes: each parses and builds; overlays are exact and keep params.yaml's comments; one-step task switch."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.core.contract import recipes
from components.core.contract.errors import ParamsError
from components.core.contract.params.schema import parse_params
from components.core.contract.params.train import TrainConfig
from components.core.model import discriminative, models
from cxr.cli import main

ROOT = Path(__file__).resolve().parents[4]
PARAMS = ROOT / "params.yaml"
REQUIRED = {"demo", "cpu-small", "seed1-vgg16", "seed2-fastai", "kermany-2class"}


def repo_params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def test_the_required_recipes_are_there_with_a_description():
    listed = {r["name"]: r for r in recipes.listing()}
    assert set(listed) >= REQUIRED
    assert all(r["description"] and r["hardware"] in ("cpu", "gpu", "any") for r in listed.values())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_recipe_parses_and_builds_its_model(name):
    base = repo_params()
    if name == "kermany-2class":  # a real-data task: the demo's ~6 validation patients cannot keep its 0.95
        base["data"]["source"] = "kaggle"
    params = parse_params(recipes.overlay(base, recipes.load(name).overlay), name)
    tiny = params.train.model_copy(update={"weights": "none", "image_size": 32})
    model = models.build_model(tiny, len(params.data.classes))
    out = model.predict(np.zeros((1, 32, 32, 1), np.uint8), verbose=0)
    assert out.shape == (1, len(params.data.classes))
    for phase in params.train.phases:  # every phase's trainable spec fits the backbone
        models.set_trainable(model, phase.trainable, params.train.freeze_batchnorm, phase.train_bn)
    assert params.train.warnings() == [], params.train.warnings()  # a recipe is coherent by definition


@pytest.mark.parametrize("name", [n for n in sorted(REQUIRED) if "train" in recipes.load(n).overlay])
def test_a_training_recipe_sets_every_train_key(name):
    """Its train section does not depend on what params.yaml held before: the recipe is exactly itself."""
    overlay = recipes.load(name).overlay
    on_repo = parse_params(recipes.overlay(repo_params(), overlay)).train
    on_defaults = parse_params(recipes.overlay({}, overlay)).train
    assert on_repo == on_defaults
    assert set(overlay["train"]) == set(TrainConfig.model_fields) - recipes.PLACEMENT_KEYS


def test_seed1_is_the_schema_default_and_exactly_seed_1():
    train = parse_params(recipes.load("seed1-vgg16").overlay).train
    assert train == TrainConfig()
    (phase,) = train.phases
    assert (train.backbone, train.weights, train.image_size) == ("vgg16", "imagenet", 224)
    assert (phase.trainable, phase.lr, phase.amsgrad, phase.schedule, phase.lr_mult) == ("last:6", 1e-4, True,
                                                                                        "constant", 1.0)
    assert (train.head.pooling, train.head.dense_units, train.head.dropout) == ("max", 512, 0.5)


def test_seed2_is_seed_2_as_done_with_fastais_derivations():
    """resnet34, fine_tune(4, base_lr=<lr_find>, freeze_epochs=6) as fastai's source derives it."""

    train = parse_params(recipes.load("seed2-fastai").overlay).train
    frozen, unfrozen = train.phases
    assert (train.backbone, train.weights, train.image_size, train.batch_size) == ("resnet34", "imagenet", 224, 64)
    assert not train.freeze_batchnorm and train.class_weight == "none"
    # freeze(); fit_one_cycle(6, slice(base_lr), pct_start=0.99): body groups at base_lr / 10, head at base_lr
    assert (frozen.epochs, frozen.trainable, frozen.lr, frozen.schedule, frozen.warmup, frozen.div) == (
        6, "head", "auto", "one_cycle", 0.99, 25.0)
    assert discriminative.group_multipliers(3, frozen.lr_mult, frozen.lr_spread) == [0.1, 0.1, 1.0]
    # base_lr /= 2; unfreeze(); fit_one_cycle(4, slice(base_lr / 100, base_lr), pct_start=0.3, div=5)
    assert (unfrozen.epochs, unfrozen.trainable, unfrozen.lr, unfrozen.lr_scale) == (4, "all", "previous", 0.5)
    assert (unfrozen.schedule, unfrozen.warmup, unfrozen.div, unfrozen.lr_groups) == ("one_cycle", 0.3, 5.0, 3)
    np.testing.assert_allclose(discriminative.group_multipliers(3, unfrozen.lr_mult, unfrozen.lr_spread),
                               [0.01, 0.1, 1.0])
    for ph in (frozen, unfrozen):  # fastai's Adam: beta_2 0.99, eps 1e-5, decoupled wd 0.01, train_bn
        assert (ph.beta_2, ph.epsilon, ph.weight_decay, ph.train_bn) == (0.99, 1e-5, 0.01, True)
    assert (train.head.pooling, train.head.batchnorm, train.head.input_dropout, train.head.dropout,
            train.head.dense_units) == ("concat", True, 0.25, 0.5, 512)
    assert train.early_stopping.patience >= max(frozen.epochs, unfrozen.epochs)  # fastai does not stop early


def test_seed2_layer_groups_are_fastais_resnet_split():
    train = parse_params(recipes.load("seed2-fastai").overlay).train
    model = models.build_model(train.model_copy(update={"weights": "none", "image_size": 32}), 3)
    body, upper, head = discriminative.layer_groups(model, 3)
    assert body[0].name == "conv1" and body[-1].name == "layer2_3_bn2"  # stem + layer1 + layer2
    assert upper[0].name == "layer3_0_conv1" and upper[-1].name == "layer4_2_bn2"  # layer3 + layer4
    assert [layer.name for layer in head] == ["head_bn0", "head_dense", "head_bn1", "head_logits"]


def test_seed2_notes_list_what_is_ours():
    notes = " ".join(recipes.load("seed2-fastai").notes)
    for word in ("Ours", "momentum", "valley", "augmentation", "patient-grouped", "last:6", "base.layers[-6:]"):
        assert word in notes, word


def test_params_yaml_is_the_demo_recipe():
    result = recipes.apply(["demo"], PARAMS, dry_run=True)
    assert result["changed"] == [] and not result["written"]


def test_task_switch_is_one_step_and_keeps_comments(tmp_path):
    p = shutil.copy(PARAMS, tmp_path / "params.yaml")
    assert main(["recipe", "apply", "kermany-2class", "--params", str(p), "--set", "data.source=kaggle"]) == 0
    params = parse_params(yaml.safe_load(Path(p).read_text()))
    assert params.data.classes == ["NORMAL", "PNEUMONIA"] and params.data.exclude_labels == ["COVID19"]
    assert dict(params.evaluate.target_sensitivity) == {"PNEUMONIA": 0.95}
    assert dict(params.gate.min_sensitivity) == {"PNEUMONIA": 0.6}
    text = Path(p).read_text()
    assert "# demo | dir | kaggle" in text and "# cxr-mlops parameters. Every key is checked" in text
    # and back: the demo recipe restores the shipped file byte for byte (comments, layout)
    assert main(["recipe", "apply", "seed2-fastai", "--params", str(p), "--set", "data.source=kaggle"]) == 0
    assert main(["recipe", "apply", "demo", "--params", str(p)]) == 0
    assert Path(p).read_text() == PARAMS.read_text()


def test_an_invalid_result_is_refused_and_the_file_left_alone(tmp_path, capsys):
    p = shutil.copy(PARAMS, tmp_path / "params.yaml")
    before = Path(p).read_text()
    assert main(["recipe", "apply", "seed1-vgg16", "--params", str(p), "--set", "train.image_size=8"]) == 3
    assert "train" in capsys.readouterr().err and Path(p).read_text() == before
    with pytest.raises(ParamsError, match=r"unknown recipe 'nope'.*seed1-vgg16"):
        recipes.apply(["nope"], p)


def test_written_floats_read_back_as_floats_with_pyyaml(tmp_path):
    p = shutil.copy(PARAMS, tmp_path / "params.yaml")
    recipes.apply(["seed2-fastai"], p)
    raw = yaml.safe_load(Path(p).read_text())  # PyYAML is YAML 1.1: 1e-05 would be a string
    assert raw["train"]["phases"][1]["epsilon"] == 1e-05
    assert isinstance(raw["train"]["reduce_lr"]["min_lr"], float)


def test_overlay_replaces_values_and_merges_sections():
    base = {"train": {"head": {"pooling": "max", "dense_units": 8}}, "evaluate": {"target_sensitivity": {"A": 1}}}
    out = recipes.overlay(base, {"train": {"head": {"dense_units": 4}}, "evaluate": {"target_sensitivity": {"B": 1}}})
    assert out["train"]["head"] == {"pooling": "max", "dense_units": 4}  # a section: merged
    assert out["evaluate"]["target_sensitivity"] == {"B": 1}  # a value: replaced whole


def test_show_lists_overlay_notes_and_warnings(capsys):
    assert main(["recipe", "show", "seed2-fastai"]) == 0
    shown = capsys.readouterr().out
    assert "fine_tune" in shown and '"warnings": []' in shown
    assert main(["recipe", "list"]) == 0 and "kermany-2class" in capsys.readouterr().out


def test_kfp_pipeline_defaults_follow_the_applied_recipe(tmp_path):
    """KFP reads params.yaml too (`cxr pipeline compile`): its default arguments carry the recipe."""
    from pipelines.pipeline import default_arguments

    p = shutil.copy(PARAMS, tmp_path / "params.yaml")
    recipes.apply(["kermany-2class", "seed2-fastai"], p, {"data.source": "kaggle"})
    args = default_arguments(p)
    assert args["data"]["classes"] == ["NORMAL", "PNEUMONIA"] and args["train"]["backbone"] == "resnet34"
    assert parse_params(args).train == parse_params(yaml.safe_load(Path(p).read_text())).train


def test_a_recipe_does_not_say_where_to_train(tmp_path):
    (tmp_path / "cluster.yaml").write_text("train:\n  workers: 4\n  batch_size: 64\n")
    with pytest.raises(ParamsError, match=r"not where: remove train\.workers"):
        recipes.load("cluster", tmp_path)


def test_one_process_settings_are_refused_with_several_workers():
    """seed2-fastai's lr: auto on a file that trains on 2 workers: refused when params are read (by
    `cxr recipe apply` before writing), not inside every worker after the launch."""
    raw = recipes.overlay({"train": {"workers": 2}}, recipes.load("seed2-fastai").overlay)
    with pytest.raises(ParamsError, match=r"lr: auto run on one process, but train\.workers is 2"):
        parse_params(raw)
    two = parse_params(recipes.overlay({"train": {"workers": 2}}, recipes.load("demo").overlay)).train
    assert any("refresh_batchnorm is skipped with several workers" in w for w in two.warnings())


def test_params_yaml_is_the_demo_recipe_over_the_schemas_defaults():
    """The schema's defaults are for real data and params.yaml ships the demo: they differ in exactly what the demo
    recipe sets (both files say so at the top), so `cxr recipe apply demo` restores params.yaml's meaning."""
    from components.core.contract import recipes
    from components.core.contract.params.schema import Params, load_params, parse_params

    defaults = Params().model_dump(mode="json", by_alias=True)
    demo = parse_params(recipes.overlay(defaults, recipes.load("demo").overlay), "demo over the defaults")
    shipped = load_params(ROOT / "params.yaml")
    assert recipes.changes(demo.model_dump(mode="json"), shipped.model_dump(mode="json")) == []
    assert recipes.changes(defaults, shipped.model_dump(mode="json", by_alias=True)), "they do differ: say why"
