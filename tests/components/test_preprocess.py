"""preprocess: every split decoded once into uint8 shards whose rows line up with their manifests."""

import json

import numpy as np
import pandas as pd
import pytest

from components import preprocess
from components.core.contract.errors import DataError
from components.core.data import manifest, shards
from tests.imagegen import encode, gray, write_tree
from tests.support import train_params


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
    assert summary["splits"]["train"] == {"images": 4, "bytes": 4 * 32 * 32, "shards": 1}
    train = shards.load_split(tmp_path / "shards", "train")
    assert train.x.shape == (4, 32, 32, 1) and train.x.dtype == np.uint8
    assert list(train.rows["path"]) == [p for p, _ in items[:4]]
    assert list(train.y) == [["NORMAL", "PNEUMONIA"].index(lbl) for _, lbl in items[:4]]
    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    per = shards.shard_images(32, p.preprocess.shard_mb)
    assert meta == {"classes": ["NORMAL", "PNEUMONIA"], "image_size": 32, "resize": p.preprocess.resize,
                    "format": 2, "shard_images": per, "splits": {"train": {"images": 4, "shards": 1},
                                                                 "val": {"images": 1, "shards": 1},
                                                                 "test": {"images": 1, "shards": 1}}}
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


def _files(root):
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_partitions_write_byte_identical_shards(tmp_path):
    """1, 3 and 7 parts (more parts than some splits have shards), by run() and part by part as the KFP tasks
    do: the same files, byte for byte; images span several fixed-size shard files."""
    labels = ("NORMAL", "PNEUMONIA")
    files = {f"{c}/{c.lower()}{i:02d}.png": encode(gray(40 + 3 * i, 56, seed=i)) for c in labels for i in range(9)}
    write_tree(tmp_path / "raw", files)
    (tmp_path / "splits").mkdir()
    items = [(p, p.split("/")[0]) for p in sorted(files)]
    splits = splits_of(tmp_path, {"train": items[::2], "val": items[1::4], "test": items[3::4]})
    base = train_params(image_size=32, backbone="small_cnn", weights="none")
    base = base.model_copy(update={"data": base.data.model_copy(update={"classes": list(labels)})})

    def params(parts):
        # 3 images of 32 x 32 per shard file
        return base.model_copy(update={"scale": base.scale.model_copy(update={"partitions": parts}),
                                       "preprocess": base.preprocess.model_copy(
                                           update={"shard_mb": 3 * 32 * 32 / 2**20})})

    one = preprocess.run(params(1), splits, tmp_path / "raw", tmp_path / "one")
    assert one["splits"]["train"] == {"images": 9, "bytes": 9 * 32 * 32, "shards": 3}
    want = _files(tmp_path / "one")
    assert "train/x-00002.npy" in want and len([k for k in want if k.endswith(".npy")]) == 3 + 2 + 2 + 3
    import io  # a shard file filled through a memory map is exactly what np.save writes for its array
    buf = io.BytesIO()
    np.save(buf, np.load(tmp_path / "one" / "train" / "x-00002.npy"))
    assert buf.getvalue() == want["train/x-00002.npy"]
    for parts in (3, 7):
        preprocess.run(params(parts), splits, tmp_path / "raw", tmp_path / f"run{parts}")
        assert _files(tmp_path / f"run{parts}") == want, parts
    partials = [tmp_path / "kfp" / str(i) for i in range(4)]
    for i, d in enumerate(partials):  # as the ParallelFor tasks, each into its own folder, then the merge task
        preprocess.run_partition(params(4), i, splits, tmp_path / "raw", d)
    preprocess.merge(params(4), partials, splits, tmp_path / "merged")
    assert _files(tmp_path / "merged") == want
    train = shards.load_split(tmp_path / "merged", "train")
    assert isinstance(train.x, shards.ChunkedArray) and train.x.shape == (9, 32, 32, 1)
    with pytest.raises(DataError, match="do not cover the shards"):
        preprocess.merge(params(4), partials[:3], splits, tmp_path / "bad")
