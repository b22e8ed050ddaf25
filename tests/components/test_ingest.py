import os

import pandas as pd
import pytest

from components import ingest
from components.core.contract.errors import DataError, ServiceError
from components.core.data import manifest
from tests.imagegen import encode, gray, write_tree
from tests.support import tiny_params


def dir_params(path, **data):
    return tiny_params(data={"source": "dir", "path": str(path), **data})


def test_demo_is_deterministic_and_has_patients(tmp_path, params):
    a = ingest.run(params, tmp_path / "a")
    ingest.run(params, tmp_path / "b")
    ma = manifest.read(tmp_path / "a" / "manifest.csv")
    mb = manifest.read(tmp_path / "b" / "manifest.csv")
    assert ma.equals(mb)
    assert (tmp_path / "a" / ma["path"][0]).read_bytes() == (tmp_path / "b" / mb["path"][0]).read_bytes()
    assert set(ma["label"]) == {"COVID19", "NORMAL", "PNEUMONIA"}
    assert a["patients"] < a["images"]  # several images per patient
    formats = {p.rsplit(".", 1)[1] for p in ma["path"]}
    assert formats == {"png", "jpeg"}


def test_kaggle_layout_with_wrappers_and_splits(tmp_path):
    png = encode(gray(40, 40))
    src = write_tree(tmp_path / "dl", {
        "chest_xray/train/NORMAL/IM-0001-0001.jpeg": encode(gray(40, 40, 1), "JPEG"),
        "chest_xray/train/NORMAL/IM-0001-0002.jpeg": encode(gray(40, 40, 2), "JPEG"),
        "chest_xray/train/PNEUMONIA/person7_bacteria_30.jpeg": encode(gray(40, 40, 3), "JPEG"),
        "chest_xray/test/NORMAL/NORMAL2-IM-0009-0001.jpeg": encode(gray(40, 40, 4), "JPEG"),
        "chest_xray/test/PNEUMONIA/person8_virus_31.jpeg": encode(gray(40, 40, 5), "JPEG"),
        "chest_xray/val/NORMAL/x y ü.png": png,
        "chest_xray/val/PNEUMONIA/readme.txt": b"not an image",
    })
    (src / "chest_xray" / "__MACOSX").mkdir()
    p = tiny_params(data={"source": "kaggle", "classes": ["NORMAL", "PNEUMONIA"]})
    summary = ingest.run(p, tmp_path / "raw", source_path=src)  # everything after the download
    df = manifest.read(tmp_path / "raw" / "manifest.csv").set_index("path")
    assert summary["images"] == 6
    assert df.loc["train/NORMAL/IM-0001-0002.jpeg", "patient_id"] == "IM-0001"
    assert df.loc["test/NORMAL/NORMAL2-IM-0009-0001.jpeg", "patient_id"] == "NORMAL2-IM-0009"
    assert df.loc["train/PNEUMONIA/person7_bacteria_30.jpeg", "patient_id"] == "person7"
    assert df.loc["test/PNEUMONIA/person8_virus_31.jpeg", "official_split"] == "test"
    assert df.loc["val/NORMAL/x y ü.png", "patient_id_origin"] == "file"
    assert (tmp_path / "raw" / "val" / "NORMAL" / "x y ü.png").read_bytes() == png
    assert df.loc["train/NORMAL/IM-0001-0001.jpeg", "source"] == p.data.kaggle_dataset
    assert any("readme.txt" in s["path"] for s in summary["skipped"]["examples"])


def test_kaggle_without_credentials_is_a_clear_error(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "none"))
    with pytest.raises(ServiceError, match="KAGGLE_USERNAME"):
        ingest.run(tiny_params(data={"source": "kaggle"}), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_label_aliases_and_unknown_labels(tmp_path):
    img = encode(gray(40, 40))
    src = write_tree(tmp_path / "src", {"covid-19/a.png": img, "Normal/b.png": encode(gray(40, 40, 1)),
                                        "pneumonia/c.png": encode(gray(40, 40, 2))})
    ingest.run(dir_params(src), tmp_path / "raw")
    assert set(manifest.read(tmp_path / "raw" / "manifest.csv")["label"]) == {"COVID19", "NORMAL", "PNEUMONIA"}
    write_tree(src, {"tuberculosis/d.png": img, "Lung_Opacity/e.png": img})
    with pytest.raises(DataError, match=r"'Lung_Opacity' \(1 images\).*'tuberculosis'"):
        ingest.run(dir_params(src), tmp_path / "raw2")
    assert not (tmp_path / "raw2").exists()
    ingest.run(dir_params(src, exclude_labels=["tuberculosis", "lung opacity"]), tmp_path / "raw3")


def test_empty_class_folder_and_missing_class(tmp_path):
    src = write_tree(tmp_path / "src", {"NORMAL/a.png": encode(gray()), "PNEUMONIA/b.png": encode(gray(seed=1))})
    (src / "COVID19").mkdir()
    with pytest.raises(DataError, match=r"class\(es\) \['COVID19'\] have no images"):
        ingest.run(dir_params(src), tmp_path / "raw")
    summary = ingest.run(dir_params(src, classes=["NORMAL", "PNEUMONIA"], exclude_labels=["COVID19"]),
                         tmp_path / "raw")
    assert any("COVID19/ has no images" in w for w in summary["warnings"])


def test_csv_manifest_with_patients_sources_and_escaping_paths(tmp_path):
    write_tree(tmp_path / "imgs", {"a.png": encode(gray()), "b.png": encode(gray(seed=1)),
                                   "c.png": encode(gray(seed=2))})
    csv = tmp_path / "imgs" / "list.csv"
    pd.DataFrame({"path": ["a.png", "b.png", "../imgs/c.png", "missing.png"],
                  "label": ["NORMAL", "PNEUMONIA", "COVID19", "NORMAL"],
                  "patient_id": ["p1", "p2", "p3", "p4"], "source": ["h1", "h2", "h3", "h1"]}).to_csv(csv, index=False)
    summary = ingest.run(dir_params(csv), tmp_path / "raw")
    df = manifest.read(tmp_path / "raw" / "manifest.csv").set_index("path")
    assert "COVID19/c.png" in df.index  # never written outside the output folder; always under the class folder
    assert df.loc["NORMAL/a.png", "source"] == "h1" and df.loc["PNEUMONIA/b.png", "patient_id"] == "p2"
    assert summary["skipped"]["examples"][0]["path"] == "missing.png"
    assert summary["skipped"]["examples"][0]["line"] == 5
    assert summary["skipped"]["by_reason"] == {"missing_file": 1}


def test_symlink_loop_and_broken_link_are_skipped(tmp_path):
    src = write_tree(tmp_path / "src", {"NORMAL/a.png": encode(gray()), "PNEUMONIA/b.png": encode(gray(seed=1)),
                                        "COVID19/c.png": encode(gray(seed=2))})
    os.symlink(src / "NORMAL" / "loop2.png", src / "NORMAL" / "loop1.png")
    os.symlink(src / "NORMAL" / "loop1.png", src / "NORMAL" / "loop2.png")
    os.symlink(src, src / "NORMAL" / "self")  # a directory link back to the root: a loop, scanned once
    summary = ingest.run(dir_params(src), tmp_path / "raw")
    assert summary["images"] == 3
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]["examples"]}
    assert skipped == {"NORMAL/loop1.png": "unreadable_link_or_file", "NORMAL/loop2.png": "unreadable_link_or_file",
                       "NORMAL/self/": "link_loop"}


def test_failed_ingest_keeps_previous_output(tmp_path, params):
    ingest.run(params, tmp_path / "raw")
    before = sorted(p.name for p in (tmp_path / "raw").rglob("*"))
    with pytest.raises(DataError):
        ingest.run(dir_params(tmp_path / "nowhere"), tmp_path / "raw")
    assert sorted(p.name for p in (tmp_path / "raw").rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")]  # no temp leftovers


def test_shared_sample_ingests_with_patients_and_sources(tmp_path, shared_sample):
    summary = ingest.run(dir_params(shared_sample), tmp_path / "raw")
    df = manifest.read(tmp_path / "raw" / "manifest.csv")
    assert summary["images"] == 200 and summary["per_class"] == {"COVID19": 70, "NORMAL": 60, "PNEUMONIA": 70}
    assert df["patient_id"].nunique() == 169
    assert df["source"].nunique() == 2
