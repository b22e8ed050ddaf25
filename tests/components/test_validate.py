import json

import pytest

from components import ingest, split, validate
from components.core.contract.errors import DataError
from components.core.data import manifest, validation
from tests.imagegen import encode, gray, png_16bit, png_header_only, write_tree
from tests.support import tiny_params


def good_tree(root, n=6):
    files = {}
    for c, cls in enumerate(("COVID19", "NORMAL", "PNEUMONIA")):
        for i in range(n):
            files[f"{cls}/{cls.lower()}_{i}.png"] = encode(gray(64, 64, seed=100 * c + i))
    return write_tree(root, files)


def run_validate(tmp_path, src, **validate_cfg):
    p = tiny_params(data={"source": "dir", "path": str(src)}, validate=validate_cfg)
    ingest.run(p, tmp_path / "raw")
    return p, validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "reports")


def test_bad_files_are_quarantined_with_reasons(tmp_path):
    src = good_tree(tmp_path / "src")
    jpeg = encode(gray(64, 64, seed=7), "JPEG")
    dup = (src / "NORMAL" / "normal_0.png").read_bytes()
    write_tree(src, {
        "NORMAL/zero.png": b"",
        "NORMAL/trunc.jpeg": jpeg[: len(jpeg) // 2],
        "NORMAL/text.png": b"just text\n" * 20,
        "NORMAL/deep16.png": png_16bit(),
        "NORMAL/alpha.png": encode(gray(40, 40), "PNG", mode="RGBA"),
        "NORMAL/bomb.png": png_header_only(9_000, 5_000),
        "NORMAL/huge-bomb.png": png_header_only(60_000, 60_000),  # past PIL's own guard too
        "NORMAL/tiny.png": encode(gray(8, 8)),
        "PNEUMONIA/same-as-normal0.png": dup,          # same image under two labels
        "NORMAL/copy of normal0.png": dup,             # and a same-label copy
    })
    _, summary = run_validate(tmp_path, src)
    q = manifest.read(tmp_path / "validated" / "quarantine.csv").set_index("path")
    reasons = q["reason"].to_dict()
    assert reasons["NORMAL/zero.png"] == "decodable: empty_file: the file has 0 bytes"
    assert reasons["NORMAL/trunc.jpeg"].startswith("decodable: truncated: ")
    assert reasons["NORMAL/text.png"].startswith("decodable: not_an_image: ")
    # the detail keeps the numbers, and the header's size is kept although the file was refused
    assert reasons["NORMAL/bomb.png"] == ("decodable: too_large: 9000x5000 = 45000000 pixels > limit 40000000 "
                                          "(validate.max_pixels)")
    assert (q.loc["NORMAL/bomb.png", "width"], q.loc["NORMAL/bomb.png", "height"]) == (9000, 5000)
    # past Pillow's own guard too: the header's numbers against validate.max_pixels, not Pillow's words
    assert reasons["NORMAL/huge-bomb.png"] == ("decodable: too_large: 60000x60000 = 3600000000 pixels > limit "
                                               "40000000 (validate.max_pixels)")
    assert (q.loc["NORMAL/huge-bomb.png", "width"], q.loc["NORMAL/huge-bomb.png", "height"]) == (60000, 60000)
    assert reasons["NORMAL/tiny.png"] == "dimensions_in_range: 8x8: shorter side 8 < limit 32 (validate.min_side)"
    assert summary["quarantine_reasons"]["decodable"] == 5
    for p in ("NORMAL/normal_0.png", "PNEUMONIA/same-as-normal0.png", "NORMAL/copy of normal0.png"):
        assert reasons[p].startswith("unique_sha256: same image under labels NORMAL/PNEUMONIA")
    ok = manifest.read(tmp_path / "validated" / "manifest.csv").set_index("path")
    assert {"NORMAL/deep16.png", "NORMAL/alpha.png"} <= set(ok.index)  # usable after conversion
    assert ok.loc["NORMAL/deep16.png", "bit_depth"] == 16
    assert summary["passed"] and summary["quarantined"] == 9
    assert (tmp_path / "reports" / "data_docs" / "index.html").is_file()
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["usable"] == summary["usable"]


def test_same_label_duplicate_keeps_one_copy(tmp_path):
    src = good_tree(tmp_path / "src")
    write_tree(src, {"NORMAL/zz-copy.png": (src / "NORMAL" / "normal_1.png").read_bytes()})
    run_validate(tmp_path, src)
    q = manifest.read(tmp_path / "validated" / "quarantine.csv")
    assert list(q["path"]) == ["NORMAL/zz-copy.png"]
    assert q["reason"][0] == "unique_sha256: duplicate of NORMAL/normal_1.png"


def test_patient_in_two_class_folders_is_a_warning_not_a_failure(tmp_path):
    src = good_tree(tmp_path / "src")
    csv = tmp_path / "src" / "MANIFEST.csv"
    rows = ["path,label,patient_id"] + [
        f"{p.relative_to(src).as_posix()},{p.parent.name},{'shared' if p.stem.endswith('_0') else p.stem}"
        for p in sorted(src.rglob("*.png"))]
    csv.write_text("\n".join(rows) + "\n")
    _, summary = run_validate(tmp_path, src)
    check = next(e for e in summary["expectations"] if e["id"] == "one_label_per_patient")
    assert not check["success"] and check["unexpected_count"] == 3 and summary["passed"]


def test_critical_expectation_fails_step_without_writing_manifest(tmp_path):
    src = good_tree(tmp_path / "src", n=6)
    write_tree(src, {f"NORMAL/extra_{i}.png": encode(gray(64, 64, seed=999 + i)) for i in range(40)})
    with pytest.raises(DataError, match="class_share"):
        run_validate(tmp_path, src, class_share={"min": 0.2, "max": 0.6})
    assert not (tmp_path / "validated").exists()
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["passed"] is False


def test_parallel_workers_give_the_same_facts(tmp_path):
    src = good_tree(tmp_path / "src", n=30)
    p = tiny_params(data={"source": "dir", "path": str(src)})
    ingest.run(p, tmp_path / "raw")
    raw = manifest.read(tmp_path / "raw" / "manifest.csv")
    one = validation.build_facts(tmp_path / "raw", raw, 10**7, workers=1)
    two = validation.build_facts(tmp_path / "raw", raw, 10**7, workers=2)
    assert one.equals(two)


def test_demo_data_passes_and_is_not_shortcut_prone(tmp_path):
    p = tiny_params(data={"demo": {"patients_per_class": 20, "max_images_per_patient": 2,
                                   "min_side": 64, "max_side": 128}})
    ingest.run(p, tmp_path / "raw")
    summary = validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "reports")
    assert summary["passed"] and summary["quarantined"] == 0
    assert summary["source_bias_audit"]["flagged"] is False


def test_shared_sample_is_flagged_by_the_bias_audit_and_splits_without_leakage(tmp_path, shared_sample):
    p = tiny_params(data={"source": "dir", "path": str(shared_sample)})
    ingest.run(p, tmp_path / "raw")
    summary = validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "reports")
    audit = summary["source_bias_audit"]
    assert audit["flagged"] and audit["balanced_accuracy"] > 0.9 and "source" in audit["warning"]
    s = split.run(p, tmp_path / "validated" / "manifest.csv", tmp_path / "splits", tmp_path / "rs")
    assert s["leakage"] == {"patient_id": 0, "sha256": 0}
    parts = {k: manifest.read(tmp_path / "splits" / f"{k}.csv") for k in ("train", "val", "test")}
    assert sum(len(v) for v in parts.values()) == summary["usable"]
    assert not set(parts["train"]["patient_id"]) & set(parts["test"]["patient_id"])


@pytest.mark.parametrize("policy", ["report", "quarantine"])
def test_dicom_files_are_audited_for_identifying_attributes(tmp_path, policy):
    from tests import imagegen

    src = good_tree(tmp_path / "src")
    pixels = imagegen.deep(80, 96)
    write_tree(src, {
        "NORMAL/clean.dcm": imagegen.dicom(pixels, patient_id="P-17"),
        "NORMAL/named.dcm": imagegen.dicom(pixels + 1, patient_id="P-18", patient_name="DOE^JANE", identifying=True),
        "PNEUMONIA/burned.dcm": imagegen.dicom(pixels + 2, patient_id="P-19", burned_in="YES"),
    })
    p = tiny_params(data={"source": "dir", "path": str(src)}, validate={"workers": 1, "phi": policy,
                                                                       "bias_audit": {"enabled": False}})
    ingest.run(p, tmp_path / "raw")
    summary = validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "reports")
    audit = summary["deidentification"]
    assert audit["dicom_files"] == 3 and audit["files_with_identifying_attributes"] >= 2
    assert audit["identifying_attributes"]["PatientName"] == 1 and audit["burned_in_annotation_yes"] == 1
    ok = manifest.read(tmp_path / "validated" / "manifest.csv").set_index("path")
    text = (tmp_path / "validated" / "manifest.csv").read_text() + (tmp_path / "reports" / "summary.json").read_text()
    assert "DOE" not in text and "P-17" not in text  # names and raw ids never leave the files
    if policy == "report":
        assert {"NORMAL/clean.dcm", "NORMAL/named.dcm", "PNEUMONIA/burned.dcm"} <= set(ok.index)
        assert ok.loc["NORMAL/clean.dcm", "patient_id"].startswith("dicom:")  # the digest names the patient
        assert ok.loc["NORMAL/clean.dcm", "patient_id_origin"] == "dicom"
        assert ok.loc["NORMAL/clean.dcm", "view_position"] == "PA"
    else:
        # strict: any identifying attribute, even a (pseudonymised) PatientID, quarantines the file
        q = manifest.read(tmp_path / "validated" / "quarantine.csv").set_index("path")
        assert {q.loc[f, "reason"] for f in ("NORMAL/clean.dcm", "NORMAL/named.dcm", "PNEUMONIA/burned.dcm")} == {
            "deidentified"}
        assert not {"NORMAL/clean.dcm", "NORMAL/named.dcm", "PNEUMONIA/burned.dcm"} & set(ok.index)


def test_a_too_wide_and_a_too_tall_image_are_both_quarantined(tmp_path):
    """Width and height are two expectations with one id: the second must not hide the first's rows."""
    src = good_tree(tmp_path / "src")
    write_tree(src, {"NORMAL/wide.png": encode(gray(200, 40)), "NORMAL/tall.png": encode(gray(40, 200))})
    run_validate(tmp_path, src, max_side=150)
    q = manifest.read(tmp_path / "validated" / "quarantine.csv").set_index("path")
    assert q.loc["NORMAL/wide.png", "reason"] == ("dimensions_in_range: 200x40: longer side 200 > limit 150 "
                                                  "(validate.max_side)")
    assert q.loc["NORMAL/tall.png", "reason"] == ("dimensions_in_range: 40x200: longer side 200 > limit 150 "
                                                  "(validate.max_side)")


def test_partitions_give_the_same_manifests_quarantine_and_summary(tmp_path):
    """1 part vs 4 (run() part by part) vs the KFP way (parts into their own folders, then the merge): the
    validated manifest and quarantine list are byte-identical; duplicates across parts are still found."""
    src = good_tree(tmp_path / "src", n=4)
    dup = (src / "COVID19" / "covid19_0.png").read_bytes()
    write_tree(src, {"PNEUMONIA/zz-copy.png": dup, "NORMAL/broken.png": b"\x89PNG\r\n\x1a\nxx"})
    p1 = tiny_params(data={"source": "dir", "path": str(src)})
    ingest.run(p1, tmp_path / "raw")
    p4 = p1.model_copy(update={"scale": p1.scale.model_copy(update={"partitions": 4})})
    results = {}
    for name, p in (("one", p1), ("four", p4)):
        results[name] = validate.run(p, tmp_path / "raw", tmp_path / name / "v", tmp_path / name / "r")
    partials = [tmp_path / "kfp" / str(i) for i in range(4)]
    for i, d in enumerate(partials):
        validate.run_partition(p4, i, tmp_path / "raw", d)
    results["kfp"] = validate.merge(p4, partials, tmp_path / "raw", tmp_path / "kfp" / "v", tmp_path / "kfp" / "r")
    for name in ("four", "kfp"):
        for f in ("manifest.csv", "quarantine.csv"):
            assert (tmp_path / name / "v" / f).read_bytes() == (tmp_path / "one" / "v" / f).read_bytes(), (name, f)
        assert {k: v for k, v in results[name].items() if k != "data_docs"} == \
            {k: v for k, v in results["one"].items() if k != "data_docs"}
    assert results["one"]["quarantined"] == 3  # the broken file and both copies (two labels)
    with pytest.raises(DataError, match="do not line up"):
        validate.merge(p4, partials[:3], tmp_path / "raw", tmp_path / "bad" / "v", tmp_path / "bad" / "r")


def test_a_class_mostly_without_patient_ids_fails_unless_a_written_reason_accepts_it(tmp_path):
    """Each file without an id is its own patient: its films can straddle the splits and the gate cannot tell which
    patients a model saw. patient_id_present is critical per class, not per row (a row always has some id)."""
    src = good_tree(tmp_path / "src", n=4)
    for i in range(4):  # PNEUMONIA gets Kermany names (ids from the file name); the others keep anonymous ones
        (src / "PNEUMONIA" / f"pneumonia_{i}.png").rename(src / "PNEUMONIA" / f"person{i}_bacteria_{i}.png")
    with pytest.raises(DataError, match=r"patient_id_present.*\n.*'COVID19': 0.0, 'NORMAL': 0.0.*"
                                        r"validate.accept_missing_patient_ids"):
        run_validate(tmp_path / "a", src, accept_missing_patient_ids=None)
    summary = json.loads((tmp_path / "a" / "reports" / "summary.json").read_text())
    assert summary["per_class"]["PNEUMONIA"]["patient_id_share"] == 1.0 and not summary["passed"]
    reason = "Study lead: one film per person by construction of this export"
    _, ok = run_validate(tmp_path / "b", src, accept_missing_patient_ids=reason)
    assert ok["passed"] and ok["missing_patient_ids_accepted"] == reason
    (check,) = [e for e in ok["expectations"] if e["id"] == "patient_id_present" and e["column"] == "patient_id_share"]
    assert not check["success"] and not check["critical"]
    with pytest.raises(Exception, match="written reason"):
        tiny_params(validate={"accept_missing_patient_ids": "ok"})
