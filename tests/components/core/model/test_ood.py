"""The OOD reference (components/core/model/ood.py): fitting, threshold, storage, the train/registry hooks, and
its evaluation on test and external sets (components/core/eval/ood.py)."""

import json

import numpy as np
import pytest

from components.core.contract.errors import CxrError
from components.core.data import shards, synthetic
from components.core.data.images import load_for_model
from components.core.eval import ood as ood_eval
from components.core.model import ood
from components.core.registry import modelcard, registry

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


def gaussian_features(n: int, seed: int, shift: float = 0.0, dims: int = 24):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    means = np.eye(3, dims) * 6
    return means[y] + rng.normal(0, 1, (n, dims)) + shift, y


def test_threshold_gives_the_target_false_alarm_rate_and_separates_a_shift():
    ftr, ytr = gaussian_features(600, 0)
    fval, yval = gaussian_features(600, 1)
    ref = ood.fit(ftr, ytr, fval, np.eye(3)[yval], CLASSES, 0.05)
    assert ref.means.shape == (3, 24) and ref.val_flag_rate() == pytest.approx(0.05, abs=0.005)
    fresh, _ = gaussian_features(4000, 2)  # the same distribution, never seen: ~5% flagged
    assert ref.flag(ref.score(fresh)).mean() == pytest.approx(0.05, abs=0.015)
    shifted, _ = gaussian_features(500, 3, shift=1.5)
    assert ref.flag(ref.score(shifted)).mean() > 0.9
    assert ood_eval.auroc(ref.score(fresh), ref.score(shifted)) > 0.97
    assert ood_eval.auroc(ref.score(fresh[:2000]), ref.score(fresh[2000:])) == pytest.approx(0.5, abs=0.05)
    assert ref.percentile(ref.threshold + 1e-9) == pytest.approx(0.95, abs=0.01)
    assert ref.expected_class_share() == pytest.approx({c: 1 / 3 for c in CLASSES})


def test_more_dimensions_than_images_still_inverts(tmp_path):
    ftr, ytr = gaussian_features(30, 0, dims=200)  # Ledoit-Wolf shrinkage: no singular covariance
    fval, yval = gaussian_features(30, 1, dims=200)
    ref = ood.fit(ftr, ytr, fval, np.eye(3)[yval], CLASSES, 0.1)
    assert np.isfinite(ref.score(fval)).all() and ref.threshold > 0


def test_save_and_load_round_trip_without_pickle(tmp_path):
    ftr, ytr = gaussian_features(90, 0)
    fval, yval = gaussian_features(60, 1)
    stats = {"mean": np.linspace(50, 150, 90), "std": np.full(90, 40.0)}
    ref = ood.fit(ftr, ytr, fval, np.eye(3)[yval], CLASSES, 0.05, stats)
    back = ood.OodReference.load(ref.save(tmp_path / ood.REFERENCE_FILE))
    assert back.classes == CLASSES and back.threshold == ref.threshold and back.n_train == 90
    np.testing.assert_allclose(back.score(fval), ref.score(fval))
    np.testing.assert_allclose(back.stats["mean"], stats["mean"])
    with np.load(tmp_path / ood.REFERENCE_FILE, allow_pickle=False) as z:
        assert "header" in z.files  # plain arrays and a JSON header: no pickled objects
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CxrError, match="cannot read the OOD reference"):
        ood.OodReference.load(tmp_path / "bad.npz")
    with pytest.raises(CxrError, match="every class"):
        ood.fit(ftr[ytr != 2], ytr[ytr != 2], fval, np.eye(3)[yval], CLASSES, 0.05)


def test_train_saves_the_reference_and_the_bundle_scores_in_one_pass(tiny_model_dir, tiny_shards):
    summary = json.loads((tiny_model_dir / "train_summary.json").read_text())
    assert summary["ood"]["file"] == ood.REFERENCE_FILE and summary["ood"]["false_alarm"] == 0.05
    ref = ood.OodReference.load(tiny_model_dir / ood.REFERENCE_FILE)
    assert ref.n_train == len(shards.load_split(tiny_shards, "train").y) and set(ref.stats) >= {"mean", "std"}
    bundle = registry.load(str(tiny_model_dir))
    assert bundle.ood is not None and bundle.describe()["ood"]["threshold"] == pytest.approx(ref.threshold, abs=1e-5)
    test = shards.load_split(tiny_shards, "test")
    probs, scores = bundle.infer_ood(test.x)
    want_p, feats = ood.probs_and_features(bundle.model, test.x)
    np.testing.assert_allclose(probs, want_p, atol=1e-5)
    np.testing.assert_allclose(scores, ref.score(feats), rtol=1e-4)


def test_a_shifted_site_scores_higher_than_the_training_site(tiny_model_dir):
    bundle = registry.load(str(tiny_model_dir))

    def site(style):
        x = [load_for_model(data, bundle.image_size, bundle.resize) for *_, data in
             synthetic.generate(CLASSES, 8, 1, 64, 96, seed=91, style=style)]
        return bundle.infer_ood(np.stack(x)[..., None])[1]

    same, shifted = site(None), site({"contrast": 0.6, "brightness": 0.15, "noise": 3.0})
    assert ood_eval.auroc(same, shifted) > 0.9
    assert bundle.ood.flag(shifted).mean() > bundle.ood.flag(same).mean() + 0.4


def test_a_model_without_reference_has_no_score(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "old-model"
    shutil.copytree(tiny_model_dir, d)
    (d / ood.REFERENCE_FILE).unlink()
    bundle = registry.load(str(d))
    probs, scores = bundle.infer_ood(np.zeros((2, bundle.image_size, bundle.image_size, 1), np.uint8))
    assert bundle.ood is None and scores is None and probs.shape == (2, 3)
    assert ood_eval.evaluate_dir(bundle.model, d, np.zeros((1, 32, 32, 1), np.uint8), None, [])["available"] is False


def test_evaluate_block_and_model_card_line(tiny_model_dir, tiny_shards, tmp_path):
    bundle = registry.load(str(tiny_model_dir))
    ext = tmp_path / "external" / "site-c"
    ext.mkdir(parents=True)
    x = np.stack([load_for_model(data, 32, "crop") for *_, data in synthetic.generate(
        CLASSES, 6, 1, 64, 96, seed=5, style={"contrast": 0.5, "brightness": 0.2, "noise": 3.0})])
    np.save(ext / "test_x.npy", x)
    np.save(ext / "test_y.npy", np.arange(len(x)) % 3)
    (ext / "test.csv").write_text("path,label,patient_id\n" + "".join(f"p{i}.png,NORMAL,p{i}\n" for i in range(len(x))))
    block = ood_eval.evaluate_dir(bundle.model, tiny_model_dir, shards.load_split(tiny_shards, "test").x,
                             tmp_path / "external", ["site-c", "absent"])
    assert block["available"] and set(block["external"]) == {"site-c"}
    assert block["external"]["site-c"]["auroc_vs_test"] > 0.8 and block["test"]["n"] > 0
    card = modelcard.render(name="m", metrics={"ood": block, "classes": CLASSES}, train={}, params={})
    assert "## Out-of-distribution warning" in card and "external set `site-c`" in card and "AUROC" in card
