"""preprocess: every split decoded once into uint8 shards whose rows line up with their manifests."""

import json

import numpy as np
import pandas as pd
import pytest

from components import preprocess
from components.core import manifest, shards
from components.core.errors import DataError
from tests.conftest import encode, gray, train_params, write_tree


def splits_of(tmp_path, rows: dict[str, list[tuple[str, str]]]):
    for name, items in rows.items():
        pd.DataFrame({"path": [p for p, _ in items], "label": [lbl for _, lbl in items],
                      "patient_id": [f"p-{p}" for p, _ in items]}).to_csv(tmp_path / "splits" / f"{name}.csv",
                                                                            index=False)
    return tmp_path / "splits"


def test_shards_line_up_with_their_manifests(tmp_path):
    files = {f"{c}/{c.lower()}{i}.png": encode(gray(40 + 8 * i, 64, seed=i)) for c in ("NORMAL", "PNEUMONIA")
             for i in range(3)}
    write_tree(tmp_path / "raw", files)
    (tmp_path / "splits").mkdir()
    # deliberately unsorted: shard row i must be manifest row i
    items = [(p, p.split("/")[0]) for p in sorted(files, reverse=True)]
    splits = splits_of(tmp_path, {"train": items[:4], "val": items[4:5], "test": items[5:]})
    p = train_params(image_size=32, backbone="small_cnn", weights="none")
    p = p.model_copy(update={"data": p.data.model_copy(update={"classes": ["NORMAL", "PNEUMONIA"]})})
    summary = preprocess.run(p, splits, tmp_path / "raw", tmp_path / "shards")
    assert summary["splits"]["train"] == {"images": 4, "bytes": 4 * 32 * 32}
    train = shards.load_split(tmp_path / "shards", "train")
    assert train.x.shape == (4, 32, 32, 1) and train.x.dtype == np.uint8
    assert list(train.rows["path"]) == [p for p, _ in items[:4]]
    assert list(train.y) == [["NORMAL", "PNEUMONIA"].index(lbl) for _, lbl in items[:4]]
    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    assert meta == {"classes": ["NORMAL", "PNEUMONIA"], "image_size": 32, "resize": p.preprocess.resize}
    assert manifest.read(tmp_path / "shards" / "test.csv")["path"].tolist() == [items[5][0]]


def test_an_undecodable_image_names_the_file_and_writes_nothing(tmp_path):
    write_tree(tmp_path / "raw", {"NORMAL/a.png": encode(gray(48, 48)), "NORMAL/broken.png": b"\x89PNG\r\n\x1a\nxx",
                                  "PNEUMONIA/b.png": encode(gray(48, 48, seed=1))})
    (tmp_path / "splits").mkdir()
    splits = splits_of(tmp_path, {"train": [("NORMAL/a.png", "NORMAL"), ("NORMAL/broken.png", "NORMAL")],
                                  "val": [("PNEUMONIA/b.png", "PNEUMONIA")], "test": [("NORMAL/a.png", "NORMAL")]})
    p = train_params(image_size=32)
    with pytest.raises(DataError, match=r"(?s)1 images of the train split could not be decoded.*NORMAL/broken.png"):
        preprocess.run(p, splits, tmp_path / "raw", tmp_path / "shards")
    assert not (tmp_path / "shards").exists()


def test_a_label_outside_the_classes_is_refused(tmp_path):
    write_tree(tmp_path / "raw", {"X/a.png": encode(gray(48, 48))})
    (tmp_path / "splits").mkdir()
    splits = splits_of(tmp_path, {"train": [("X/a.png", "TUBERCULOSIS")], "val": [], "test": []})
    with pytest.raises(DataError, match=r"labels \['TUBERCULOSIS'\] are not in data.classes"):
        preprocess.run(train_params(), splits, tmp_path / "raw", tmp_path / "shards")
