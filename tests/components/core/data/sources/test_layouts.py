"""The Kaggle DICOM layouts as sources (components/core/data/sources/rsna.py, siim.py): detection, labels,
patient ids, and an account of every file and label row. Trees are written by tests/kaggle_layouts.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components import ingest
from components.core.contract.params.schema import parse_params
from components.core.contract.errors import DataError
from components.core.data import manifest, sources
from components.core.data.dicom import patient_digest
from tests.imagegen import encode, gray, write_tree
from tests.kaggle_layouts import rsna_tree, siim_tree


def data(path, classes, **more):
    return parse_params({"data": {"source": "dir", "path": str(path), "classes": classes, **more}}).data


def all_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------- RSNA
def test_rsna_is_detected_under_a_wrapper_with_labels_patients_and_pseudonymous_names(tmp_path):
    labels = {"a1": "PNEUMONIA", "b2": "NORMAL", "c3": "OTHER", "d4": "PNEUMONIA"}
    rsna_tree(tmp_path / "dl" / "rsna-pneumonia-detection-challenge", labels, boxes={"d4": 3}, test_images=2)
    p = parse_params({"data": {"source": "dir", "path": str(tmp_path / "dl"), "classes": ["NORMAL", "PNEUMONIA"]}})
    summary = ingest.run(p, tmp_path / "raw", tmp_path / "reports")
    assert summary["layout"].startswith("rsna") and summary["per_class"] == {"NORMAL": 1, "PNEUMONIA": 2}
    df = manifest.read(tmp_path / "raw" / "manifest.csv").set_index("patient_id")
    assert sorted(df.index) == ["a1", "b2", "d4"] and set(df["patient_id_origin"]) == {"manifest"}
    assert df.loc["d4", "boxes"] == 3 and df.loc["b2", "boxes"] == 0
    assert df.loc["a1", "source_label"] == "Lung Opacity"
    assert df.loc["a1", "source"] == "rsna-pneumonia-detection-challenge"
    # file names are patientIds: stored under their digest, the original name kept in the data folder only
    assert df.loc["a1", "path"] == f"stage_2_train_images/{patient_digest('a1')}.dcm"
    assert df.loc["a1", "source_file"] == "stage_2_train_images/a1.dcm"
    assert (tmp_path / "raw" / df.loc["a1", "path"]).is_file()
    skipped = summary["skipped"]["by_reason"]
    assert skipped == {"excluded_label": 1, "unlabelled_test_image": 2, "unused_file": 1}
    report = (tmp_path / "reports" / "skipped.csv").read_text() + json.dumps(summary)
    for pid in [*labels, "test-patient-000", "test-patient-001"]:
        assert f"/{pid}." not in report, pid
    private = pd.read_csv(tmp_path / "raw" / sources.PRIVATE_SKIPPED)
    assert set(private["source_file"]) == {"stage_2_train_images/c3.dcm", "stage_2_test_images/test-patient-000.dcm",
                                           "stage_2_test_images/test-patient-001.dcm"}
    # every file of the tree is an image in the manifest, a skipped file, or a label table read
    base = tmp_path / "dl" / "rsna-pneumonia-detection-challenge"
    accounted = set(df["source_file"]) | set(private["source_file"]) | {"stage_2_sample_submission.csv",
                                                                        "stage_2_train_labels.csv",
                                                                        "stage_2_detailed_class_info.csv"}
    assert set(all_files(base)) == accounted


def test_rsna_rows_and_images_that_do_not_match_are_accounted_for(tmp_path):
    labels = {"ok1": "NORMAL", "ok2": "PNEUMONIA", "gone": "NORMAL", "twoclass": "PNEUMONIA"}
    rsna_tree(tmp_path, labels, images=["ok1", "ok2", "twoclass", "nolabel", "t0only", "t1only", "clash"],
              test_images=0,
              extra_box_rows=[["", "", "", "", "", 1], ["ok1", "", "", "", "", "maybe"], ["t0only", "", "", "", "", 0],
                              ["t1only", 1, 2, 3, 4, 1], ["clash", 1, 2, 3, 4, 1]],
              extra_class_rows=[["twoclass", "Normal"], ["clash", "Normal"]])
    scan = sources.scan_path(tmp_path, None, "rsna")
    kept = {e.patient_id: e.raw_label for e in scan.entries}
    assert kept == {"ok1": "Normal", "ok2": "Lung Opacity", "t1only": "Lung Opacity"}  # boxes, no class row: opacity
    reasons = {}
    for s in scan.skipped:
        reasons.setdefault(s["reason"], []).append(s)
    assert [s["path"] for s in reasons["malformed_row"]] == ["stage_2_train_labels.csv:8", "stage_2_train_labels.csv:9"]
    ambiguous = {s["source_file"]: s["detail"] for s in reasons["ambiguous_label"]}
    assert set(ambiguous) == {"stage_2_train_images/twoclass.dcm", "stage_2_train_images/t0only.dcm",
                              "stage_2_train_images/clash.dcm"}
    assert "Normal or No Lung Opacity" in ambiguous["stage_2_train_images/t0only.dcm"]
    assert [s["source_file"] for s in reasons["image_without_label_row"]] == ["stage_2_train_images/nolabel.dcm"]
    assert [s["path"] for s in reasons["label_row_without_image"]] == ["stage_2_train_labels.csv:5",
                                                                       "stage_2_detailed_class_info.csv:5"]
    assert all("gone" not in s["path"] + s["detail"] for s in scan.skipped)


def test_rsna_other_class_can_be_kept_and_layout_errors_are_clear(tmp_path):
    rsna_tree(tmp_path / "rsna", {"a": "PNEUMONIA", "b": "NORMAL", "c": "OTHER"}, test_images=0)
    d = data(tmp_path / "rsna", ["NORMAL", "OTHER", "PNEUMONIA"],
             label_aliases={"No Lung Opacity / Not Normal": "OTHER"})
    summary = sources.ingest_into(d, tmp_path / "raw")
    assert summary["per_class"] == {"NORMAL": 1, "OTHER": 1, "PNEUMONIA": 1}
    write_tree(tmp_path / "classes", {"NORMAL/a.png": encode(gray()), "PNEUMONIA/b.png": encode(gray(seed=1))})
    with pytest.raises(DataError, match=r"data.layout is 'rsna'.*stage_2_train_labels\.csv"):
        sources.ingest_into(data(tmp_path / "classes", ["NORMAL", "PNEUMONIA"], layout="rsna"), tmp_path / "x")
    with pytest.raises(DataError, match="cannot find class folders"):  # classes: the layout is not detected
        sources.ingest_into(data(tmp_path / "rsna", ["NORMAL", "PNEUMONIA"], layout="classes"), tmp_path / "y")
    (tmp_path / "rsna" / "stage_2_detailed_class_info.csv").unlink()
    with pytest.raises(DataError, match=r"stage_2_detailed_class_info\.csv is missing"):
        sources.ingest_into(data(tmp_path / "rsna", ["NORMAL", "PNEUMONIA"]), tmp_path / "z")


# ---------------------------------------------------------------- SIIM
def test_siim_labels_and_patients_across_studies(tmp_path):
    studies = {
        "s1": {"label": "Typical Appearance", "images": 2, "patient": "PAT-1"},
        "s2": {"label": "Negative for Pneumonia", "patient": "PAT-1"},  # same patient, another study
        "s3": {"label": "Negative for Pneumonia"},                      # no PatientID: the study is the patient
        "s4": {"label": "Indeterminate Appearance", "patient": "PAT-2"},
        "s5": {"label": "Atypical Appearance", "patient": "PAT-3"},
    }
    siim_tree(tmp_path / "src" / "siim-covid19-detection", studies, test_images=1)
    summary = sources.ingest_into(data(tmp_path / "src", ["COVID19", "NORMAL"]), tmp_path / "raw")
    assert summary["layout"].startswith("siim") and summary["per_class"] == {"COVID19": 4, "NORMAL": 2}
    df = manifest.read(tmp_path / "raw" / "manifest.csv").set_index("study")
    digest = f"dicom:{patient_digest('PAT-1')}"
    assert set(df.loc[["s1", "s2"], "patient_id"]) == {digest}  # linked by the PatientID: one split, always
    assert df.loc["s3", "patient_id"] == "study:s3" and df.loc["s3", "patient_id_origin"] == "study"
    assert df.loc["s4", "source_label"] == "Indeterminate Appearance" and df.loc["s4", "label"] == "COVID19"
    assert not (tmp_path / "raw").joinpath("manifest.csv").read_text().count("PAT-")  # raw ids stay in the files
    assert summary["skipped"] and {s["reason"] for s in summary["skipped"]} == {"unlabelled_test_image", "unused_file"}
    # configurable: drop indeterminate readings, call atypical ones pneumonia
    d = data(tmp_path / "src", ["COVID19", "NORMAL", "PNEUMONIA"], exclude_labels=["Indeterminate Appearance"],
             label_aliases={"Atypical Appearance": "PNEUMONIA"})
    summary = sources.ingest_into(d, tmp_path / "raw2")
    assert summary["per_class"] == {"COVID19": 2, "NORMAL": 2, "PNEUMONIA": 1}


def test_siim_rows_and_images_that_do_not_match_are_accounted_for(tmp_path):
    studies = {"ok": {"label": "Typical Appearance"}, "two": {"label": [0, 1, 0, 1]}, "none": {"label": [0, 0, 0, 0]},
               "neg": {"label": "Negative for Pneumonia"}}
    siim_tree(tmp_path, studies, test_images=0,
              extra_study_rows=[["ghost_study", 1, 0, 0, 0], ["nostudy", 1, 0, 0, 0], ["x_study", 1, "y", 0, 0]])
    image_csv = tmp_path / "train_image_level.csv"
    rows = pd.read_csv(image_csv, dtype=str, keep_default_na=False)
    rows.loc[rows["id"] == "neg-i0_image", "StudyInstanceUID"] = "ok"  # names another study
    rows.loc[len(rows)] = ["lost_image", "", "none 1 0 0 1 1", "ok"]
    rows.to_csv(image_csv, index=False)
    write_tree(tmp_path, {"train/orphan/orphan-s/orphan-i0.dcm": (tmp_path / "train/ok/ok-s/ok-i0.dcm").read_bytes(),
                          "train/flat.dcm": b"x", "train/ok/ok-s/notes.txt": b"x"})
    scan = sources.scan_path(tmp_path, None)
    assert [e.dest for e in scan.entries] == ["train/ok/ok-s/ok-i0.dcm"]
    got = sorted((s["reason"], s["path"]) for s in scan.skipped)
    assert got == sorted([
        ("ambiguous_label", "train/two/two-s/two-i0.dcm"), ("ambiguous_label", "train/none/none-s/none-i0.dcm"),
        ("ambiguous_row", "train/neg/neg-s/neg-i0.dcm"),
        ("image_without_label_row", "train/orphan/orphan-s/orphan-i0.dcm"),
        ("outside_layout", "train/flat.dcm"), ("not_an_image_name", "train/ok/ok-s/notes.txt"),
        ("label_row_without_image", "train_study_level.csv:6"),  # ghost_study
        ("malformed_row", "train_study_level.csv:7"), ("malformed_row", "train_study_level.csv:8"),
        ("label_row_without_image", "train_image_level.csv:6"),  # lost
        ("unused_file", "sample_submission.csv"),
    ])
