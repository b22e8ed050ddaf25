"""Shortcut stress tests (components/core/eval/shortcut.py), resize modes and the planted-shortcut demo.

Proof both ways: the default demo (no shortcut by construction) is not flagged, a demo with a planted
class-dependent corner marker is flagged by the border probe and the centre-masked test, and the shared real
sample (class = hospital) is flagged by the border probe. The central field blanks the same share of the
visible film in every resize mode; it is a rectangle, not a lung mask. Tiny sizes: 32–48 px, small_cnn, a few epochs.
"""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.core.contract.params.evaluate import CentralFieldConfig, ShortcutConfig
from components.core.data import images, square, synthetic
from components.core.eval import shortcut
from tests.support import train_params

FIELD = CentralFieldConfig()


# --- resize modes and geometry ---------------------------------------------------------------------

def _film(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(30, 226, (h, w), dtype=np.uint8)


@pytest.mark.parametrize("w,h", [(100, 50), (50, 100), (64, 64), (99, 61)])
def test_content_box_matches_fit_square(w, h):
    film = _film(w, h)
    for mode in ("pad", "pad_edge"):
        out = square.fit_square(film, 32, mode)
        top, left, bh, bw = square.content_box(w, h, 32, mode)
        assert out.shape == (32, 32) and max(bh, bw) == 32
        assert square.content_box_from_pixels(out, mode) == (top, left, bh, bw)
        if mode == "pad":
            assert not out[:top].any() and not out[top + bh:].any() and not out[:, :left].any()
        else:  # the bands repeat the film's edge rows/columns: no black rectangle
            assert (out[:top] == out[top]).all() and (out[top + bh:] == out[top + bh - 1]).all()
            assert (out[:, :left] == out[:, [left]]).all()
            np.testing.assert_array_equal(out[top:top + bh, left:left + bw],
                                          square.fit_square(film, 32, "pad")[top:top + bh, left:left + bw])
    top, left, bh, bw = square.content_box(w, h, 32, "crop")
    assert min(bh, bw) == 32 and top <= 0 and left <= 0
    assert square.fit_square(film, 32, "crop").shape == (32, 32)


def test_pad_and_crop_are_unchanged():
    """The existing modes give the same pixels as before the refactor (PIL canvas paste / crop)."""
    film = _film(90, 60, 3)
    im = Image.fromarray(film).resize((32, 21), Image.Resampling.BILINEAR, reducing_gap=2.0)
    canvas = Image.new("L", (32, 32), 0)
    canvas.paste(im, (0, 5))
    np.testing.assert_array_equal(square.fit_square(film, 32, "pad"), np.asarray(canvas))
    im = Image.fromarray(film).resize((48, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)
    np.testing.assert_array_equal(square.fit_square(film, 32, "crop"), np.asarray(im.crop((8, 0, 40, 32))))
    with pytest.raises(ValueError, match="resize mode"):
        square.fit_square(film, 32, "stretch")


def test_central_field_is_centred_on_the_visible_film_and_filled_with_the_rest_of_it():
    x = np.stack([square.fit_square(_film(100, 50), 40, "pad"), square.fit_square(_film(50, 100), 40, "pad")])
    rows = pd.DataFrame({"width": [100, 50], "height": [50, 100]})
    boxes, source = shortcut.film_boxes(x, rows, "pad")
    assert source == "manifest" and boxes.tolist() == [[10, 0, 20, 40], [0, 10, 40, 20]]
    assert shortcut.film_boxes(x, None, "pad")[1] == "pixels"
    masks = shortcut.central_masks(boxes, 40, FIELD)
    # a 20 x 40 film at rows 10-30: rows 10-90% of it (12-28), columns 5-95% (2-38)
    assert shortcut.central_rect(boxes[0], 40, FIELD) == (12, 28, 2, 38)
    assert not masks[0, :12].any() and masks[0, 12:28, 2:38].all() and not masks[0, 28:].any()
    blanked = shortcut.blank_centre(x, masks, boxes)
    rest = np.zeros((40, 40), bool)
    rest[10:30] = True  # the film's box, minus its central field: what stays visible (the centre never leaks in)
    rest_mean = round(float(x[0][rest & ~masks[0]].mean()))
    assert (blanked[0][masks[0]] == rest_mean).all() and (blanked[0][~masks[0]] == x[0][~masks[0]]).all()


@pytest.mark.parametrize("fractions", [(0.1, 0.9, 0.05, 0.95), (0.25, 0.75, 0.25, 0.75)])
def test_blanked_share_of_the_visible_film_is_the_same_in_every_resize_mode(fractions):
    """The old rectangle was a share of the whole film box: 72% of a letterboxed film, about 81% of a cropped square
    (the box overflows it). pad and crop were compared on different areas. Now each mode loses the same share of
    what the model sees."""
    field = CentralFieldConfig(**dict(zip(("top", "bottom", "left", "right"), fractions, strict=True)))
    area = field.area
    shares = {}
    for mode in ("pad", "pad_edge", "crop"):
        for w, h in ((1671, 1296), (640, 524), (1174, 780), (800, 1000)):
            box = np.array([square.content_box(w, h, 64, mode)])
            mask, film = shortcut.central_masks(box, 64, field), shortcut.film_masks(box, 64)
            shares[(mode, w)] = mask.sum() / film.sum()
    assert max(shares.values()) - min(shares.values()) < 0.03
    assert all(abs(v - area) < 0.03 for v in shares.values())


# --- statistics and probes on arrays ---------------------------------------------------------------

def _squares(n_per_class: int, marker: bool, seed: int = 0):
    """Noise films (32 px, letterboxed at random aspects); with ``marker``, a white block in a class corner."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(3):
        for _ in range(n_per_class):
            film = rng.integers(40, 200, (int(rng.integers(24, 40)), int(rng.integers(24, 40))), dtype=np.uint8)
            if marker:
                r = 0 if c < 2 else film.shape[0] - 4
                col = 0 if c % 2 == 0 else film.shape[1] - 4
                film[r:r + 3, col:col + 3] = 255
            x.append(square.fit_square(film, 32, "pad"))
            y.append(c)
    return np.stack(x), np.array(y)


def test_border_probe_sees_a_corner_marker_and_not_noise():
    x, y = _squares(12, marker=True)
    groups = np.arange(len(y)).astype(str)
    planted = shortcut.grouped_probe(shortcut.border_features(x, 0.12), y, groups, 5, 0)
    assert planted["value"] > 0.8 and planted["p_value"] < 1e-3
    x, y = _squares(12, marker=False)
    clean = shortcut.grouped_probe(shortcut.border_features(x, 0.12), y, groups, 5, 0)
    assert clean["value"] < 0.58 and clean["p_value"] > 0.01  # chance is 1/3
    assert "not_run" in shortcut.grouped_probe(x[:4], y[:4], groups[:4], 5, 0)


def test_p_value_counts_patients_not_images():
    y = np.repeat([0, 1], 10)
    by_image = shortcut.p_above_chance(0.8, y)
    by_patient = shortcut.p_above_chance(0.8, y, np.repeat(np.arange(4), 5))  # 2 patients per class
    assert by_image < 0.01 < by_patient
    assert shortcut.p_above_chance(0.5, y) == pytest.approx(0.5)
    assert shortcut.p_mean_positive(np.full(3, 0.3)) == 1 / 8  # 3 patients can never flag at 0.05
    assert shortcut.p_mean_positive(np.full(6, 0.3)) == 1 / 64
    assert shortcut.p_mean_positive(np.array([0.3, -0.3] * 10)) > 0.4


def test_attention_outside_and_subsample():
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    heat = np.zeros((4, 8, 8), np.float32)
    heat[:2, 0, :] = 1.0  # class 0 looks at the top band
    heat[2:, 3, 3] = 1.0  # class 1 at the centre
    out = shortcut.attention_outside(heat, masks, np.array([0, 0, 1, 1]), ["A", "B", "C"])
    assert out["A"]["share_outside"] == 1.0 and out["A"]["area_outside"] == 0.75 and out["A"]["excess"] == 0.25
    assert out["A"]["patients"] == 2 and out["A"]["p_value"] == 0.25
    assert out["B"]["share_outside"] == 0.0 and "C" not in out
    idx = shortcut.subsample(np.repeat([0, 1, 2], [50, 30, 20]), 10, seed=0)
    assert len(idx) == 10 and np.bincount(np.repeat([0, 1, 2], [50, 30, 20])[idx]).tolist() == [5, 3, 2]


def test_source_probe_within_a_class_blocks_only_where_source_goes_with_the_label_in_training():
    """Class 0 comes from two hospitals whose features differ; class 1 from one: only class 0 is probed. Whether
    that blocks depends on the training data: hospital b all class 0 there (a shortcut the model could learn), or
    both hospitals with the same class mix, or hospital b never seen (a domain shift, reported)."""
    rng = np.random.default_rng(0)
    n = 40
    feats = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.repeat([0, 1], n // 2)
    source = np.array(["a", "b"] * (n // 4) + ["a"] * (n // 2))
    feats[source == "b", 0] += 4.0  # hospital b shifts one feature
    pooled = {"test": {"features": feats[: n // 2 + 10], "y": y[: n // 2 + 10], "source": source[: n // 2 + 10],
                       "groups": np.arange(n // 2 + 10).astype(str)},
              "ext": {"features": feats[n // 2 + 10:], "y": y[n // 2 + 10:], "source": np.full(10, ""),
                      "groups": np.arange(10).astype(str)}}

    def train(sources, labels):
        return pd.DataFrame({"source": sources, "label": labels, "patient_id": [f"t{i}" for i in range(len(labels))]})

    shortcut_in_training = train(["b"] * 20 + ["a"] * 20, ["A"] * 20 + ["B"] * 20)
    out = shortcut.source_probe(pooled, ["A", "B"], ShortcutConfig(), shortcut_in_training)
    assert out["class"] == "A" and out["flagged"] and out["value"] > 0.8 and out["chance"] == 0.5
    assoc = out["per_class"]["A"]["training_association"]
    assert assoc["associated"] and assoc["cramers_v"] == 1.0 and assoc["sources_in_training"] == ["a", "b"]
    assert out["per_class"]["B"]["sources"] == ["a", "set:ext"]  # an empty source is named after its set
    assert not out["per_class"]["B"]["flagged"]

    same_mix = train(["a", "b"] * 20, ["A", "A", "B", "B"] * 10)
    reported = shortcut.source_probe(pooled, ["A", "B"], ShortcutConfig(), same_mix)
    assert reported["above_chance"] and not reported["flagged"]
    assert not reported["per_class"]["A"]["training_association"]["associated"]
    one_site = shortcut.source_probe(pooled, ["A", "B"], ShortcutConfig(), train(["a"] * 40, ["A", "B"] * 20))
    assert not one_site["flagged"] and "1 of these sources" in one_site["per_class"]["A"]["training_association"][
        "reason"]
    block = {"enabled": True, "flags": [], "sets": {}, "source_probe": one_site}
    assert "reported, not blocking" in shortcut.summary_text(block)

    one = {"test": {**pooled["test"], "source": np.full(n // 2 + 10, "a")}}
    assert shortcut.source_probe(one, ["A", "B"], ShortcutConfig())["not_run"].startswith("no class")


def test_disabled_block():
    block = shortcut.stress_tests(None, {}, ["A", "B"], ShortcutConfig(enabled=False))
    assert block["shortcut_risk"] is False and "turned off" in shortcut.summary_text(block)


def test_planted_shortcuts_leave_the_default_demo_alone():
    classes = ["COVID19", "NORMAL", "PNEUMONIA"]
    plain = list(synthetic.generate(classes, 2, 1, 64, 64, 0))
    assert plain == list(synthetic.generate(classes, 2, 1, 64, 64, 0, shortcut="none"))
    marked = list(synthetic.generate(classes, 2, 1, 64, 64, 0, shortcut="corner_marker"))
    assert [m[:3] for m in marked] == [p[:3] for p in plain] and marked[0][3] != plain[0][3]
    img = np.full((50, 50), 0.5, np.float32)
    assert (synthetic.plant_shortcut(img.copy(), "border", 0) == 0.5).all()
    framed = synthetic.plant_shortcut(img.copy(), "border", 2)
    assert (framed[:3] == 0).all() and (framed[3:-3, 3:-3] == 0.5).all()


def test_shared_sample_borders_give_the_class_away(shared_sample):
    """Class = hospital in the shared sample: the outer frame alone predicts it (pad mode, 32 px)."""
    m = pd.read_csv(shared_sample / "MANIFEST.csv").groupby("label").head(20)
    classes = sorted(m["label"].unique())
    raw = [images.decode_gray((shared_sample / p).read_bytes()) for p in m["path"]]
    x = np.stack([square.fit_square(r, 32, "pad") for r in raw])
    rows = pd.DataFrame({"width": [r.shape[1] for r in raw], "height": [r.shape[0] for r in raw]})
    boxes, _ = shortcut.film_boxes(x, rows, "pad")
    y = np.array([classes.index(c) for c in m["label"]])
    probe = shortcut.grouped_probe(shortcut.border_features(x, 0.12, shortcut.central_masks(boxes, 32, FIELD)), y,
                                   m["patient_id"].astype(str).to_numpy(), 5, 0)
    cfg = ShortcutConfig()
    assert probe["value"] >= probe["chance"] + cfg.margins.border_probe and probe["p_value"] <= cfg.alpha


# --- the trained model: clean demo vs planted shortcut ---------------------------------------------

def _eval_sets(shards_dir):
    from components.core.data import shards

    test = shards.load_split(shards_dir, "test")
    return {"test": shortcut.EvalSet(test.x, test.y, test.rows, shards.read_meta(shards_dir).resize)}


def _demo_model(root, planted: str):
    """Demo films (``data.demo.shortcut``), 48 px, through the real steps; a small_cnn trained on them."""
    from components import ingest, preprocess, split, train

    # batch 4: enough BatchNorm updates for a from-scratch net to learn on ~40 training films in 10 epochs
    p = train_params(image_size=48, batch_size=4, phases=[{"epochs": 10, "trainable": "all", "lr": 0.003}],
                     early_stopping={"patience": 10})
    demo = p.data.demo.model_copy(update={"shortcut": planted, "patients_per_class": 20, "max_images_per_patient": 1})
    p = p.model_copy(update={"data": p.data.model_copy(update={"demo": demo}),
                             "split": p.split.model_copy(update={"test_fraction": 0.3})})
    ingest.run(p, root / "raw")
    split.run(p, root / "raw" / "manifest.csv", root / "splits", root / "reports")
    preprocess.run(p, root / "splits", root / "raw", root / "shards")
    train.run(p, root / "shards", root / "models", root / "state", track=False)
    return p, root


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _demo_model(tmp_path_factory.mktemp("planted"), "corner_marker")


@pytest.mark.slow
def test_clean_demo_model_is_not_flagged(tmp_path):
    from components.core.model import models

    p, root = _demo_model(tmp_path, "none")
    model = models.load_model(root / "models" / "model.keras")
    block = shortcut.stress_tests(model, _eval_sets(root / "shards"), list(p.data.classes), p.evaluate.shortcut)
    assert block["shortcut_risk"] is False, block["flags"]
    res = block["sets"]["test"]
    assert res["film_box_from"] == "pixels" and "value" in res["centre_masked"] and "value" in res["border_probe"]
    assert abs(res["blanked_share_of_film"] - 0.72) < 0.03
    assert block["source_probe"]["not_run"]  # one source ("demo")
    assert block["summary"].startswith("Shortcut risk: none found.")


@pytest.mark.slow
def test_planted_corner_marker_is_flagged_by_evaluate(planted, tmp_path):
    from components import evaluate
    from components.core.registry import modelcard

    p, root = planted
    p = p.model_copy(update={"evaluate": p.evaluate.model_copy(update={
        "bootstrap": p.evaluate.bootstrap.model_copy(update={"resamples": 0})})})
    summary = evaluate.run(p, root / "models", root / "shards", tmp_path / "eval", tmp_path / "metrics.json",
                           track=False)
    block = json.loads((tmp_path / "metrics.json").read_text())["shortcut"]
    assert summary["shortcut_risk"] is True and block["shortcut_risk"] is True
    flagged = {f["test"] for f in block["flags"]}
    assert "border_probe" in flagged and "centre_masked" in flagged, block["flags"]
    for f in block["flags"]:
        assert f["set"] == "test" and f["value"] >= f["threshold"] and set(f) >= {"value", "threshold", "chance",
                                                                                  "p_value", "what"}
    card = modelcard.render(name="planted", metrics=json.loads((tmp_path / "metrics.json").read_text()), train={},
                            params=p.model_dump(mode="json", by_alias=True))
    section = card[card.index("## What the model looks at"):]
    assert "Shortcut risk: YES" in section and "**shortcut**" in section
    assert (tmp_path / "eval" / "plots" / "gradcam.png").stat().st_size > 1000
