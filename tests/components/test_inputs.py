"""Every input accounted for (issue 23): a hostile class-folder tree partitions into manifest, skipped.csv and
quarantine; CSV manifests get the trees' rules (root confinement, links, image names, a line per row, class
folders named by the normalised label); damaged films are quarantined with a named reason and its numbers.
Issue 32: every name storable on any checkout (long names, twins, backslashes, normalised class folders), films
with nothing in them quarantined, and an expectation that could not run stops validate."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import ingest, validate
from components.core.contract.errors import DataError
from components.core.data import manifest
from components.core.data.sources.base import safe_name
from tests.imagegen import (
    encode,
    float_tiff_with_nan,
    garbled_jpeg,
    gray,
    half_transparent_png,
    multipage_tiff,
    write_tree,
)
from tests.support import tiny_params


def dir_params(path, **more):
    data = {"source": "dir", "path": str(path), **more.pop("data", {})}
    return tiny_params(data=data, **more)


def files_under(root: Path) -> set[str]:
    """Every file under ``root`` (a link, to a file or a folder, is one file), as the reports name it."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
            out.add(safe_name((here / name).relative_to(root).as_posix()))
    return out


def where_each_file_is(files: set[str], kept: set[str], quarantined: set[str], skipped: pd.DataFrame) -> dict:
    """file → the places that name it (a skipped row ending in / names every file under that folder)."""
    rows = [r for r in skipped.itertuples() if r.status == "skipped"]
    places: dict[str, list[str]] = {f: [] for f in files}
    for f in files:
        places[f] += ["manifest"] * (f in kept) + ["quarantine"] * (f in quarantined)
        for r in rows:
            if r.path == f or (r.path.endswith("/") and (f + "/" == r.path or f.startswith(r.path))):
                places[f].append(f"skipped:{r.reason}")
    return places


def good_images(prefix: str, n: int = 3, seed: int = 0) -> dict[str, bytes]:
    return {f"{prefix}/{prefix.lower()}_{i}.png": encode(gray(64, 64, seed=seed + i)) for i in range(n)}


def test_a_hostile_tree_partitions_into_manifest_skipped_and_quarantine(tmp_path):
    src = write_tree(tmp_path / "src", {
        **good_images("NORMAL"), **good_images("PNEUMONIA", seed=10), **good_images("COVID19", seed=20),
        "stray.png": encode(gray(64, 64, seed=30)),            # an image beside the class folders
        "README.md": b"# about this data\n",
        ".DS_Store": b"\0\0\0\1Bud1",
        "__MACOSX/NORMAL/._normal_0.png": b"\0\5\26\7",      # a zip's macOS metadata folder
        "NORMAL/.scan.jpeg": encode(gray(64, 64, seed=31), "JPEG"),  # a real image, dot-named
        "NORMAL/._normal_1.png": b"\0\5\26\7 AppleDouble",
        "NORMAL/notes.txt": b"not an image",
        "NORMAL/.cache/x.png": encode(gray(64, 64, seed=32)), "NORMAL/.cache/y.png": b"",
        "NORMAL/tiny.png": encode(gray(8, 8)),
        "NORMAL/zero.png": b"",
        "PNEUMONIA/half-transparent.png": half_transparent_png(),
        "PNEUMONIA/garbled.jpeg": garbled_jpeg(),
        "COVID19/pages.tiff": multipage_tiff(3),
    })
    (tmp_path / "outside.png").write_bytes(encode(gray(64, 64, seed=40)))
    os.symlink(tmp_path / "outside.png", src / "PNEUMONIA" / "out.png")
    os.symlink(src / "PNEUMONIA" / "nowhere.png", src / "PNEUMONIA" / "broken.png")
    with open(os.path.join(os.fsencode(src / "NORMAL"), b"caf\xe9.png"), "wb") as fh:  # a Latin-1 name
        fh.write(encode(gray(64, 64, seed=41)))

    p = dir_params(src)
    ingest.run(p, tmp_path / "raw", tmp_path / "reports")
    summary = validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "vreports")
    kept = manifest.read(tmp_path / "validated" / "manifest.csv")
    q = manifest.read(tmp_path / "validated" / "quarantine.csv").set_index("path")
    skipped = pd.read_csv(tmp_path / "reports" / "skipped.csv", keep_default_na=False)

    places = where_each_file_is(files_under(src), set(kept["path"]), set(q.index), skipped)
    assert {f: p for f, p in places.items() if len(p) != 1} == {}  # each file in exactly one place
    where = {f: p[0] for f, p in places.items()}
    assert where["stray.png"] == where["README.md"] == "skipped:outside_class_folder"
    assert where[".DS_Store"] == where["NORMAL/.scan.jpeg"] == where["NORMAL/._normal_1.png"] == "skipped:hidden_file"
    assert where["__MACOSX/NORMAL/._normal_0.png"] == where["NORMAL/.cache/x.png"] == "skipped:hidden_folder"
    assert where["NORMAL/notes.txt"] == "skipped:not_an_image_name"
    assert where["PNEUMONIA/out.png"] == "skipped:link_outside_data_folder"
    assert where["PNEUMONIA/broken.png"] == "skipped:unreadable_link_or_file"
    assert where["NORMAL/caf%E9.png"] == where["COVID19/pages.tiff"] == "manifest"
    details = dict(zip(skipped["path"], skipped["detail"], strict=True))
    assert details["NORMAL/.scan.jpeg"].startswith("a hidden (dot-named) image: rename it")
    assert details["NORMAL/._normal_1.png"].startswith("AppleDouble file")
    assert details["NORMAL/.cache/"] == "a hidden (dot-named) folder: its 2 file(s) are not read"
    assert ("renamed", "NORMAL/caf%E9.png", "non_utf8_name") in set(zip(skipped["status"], skipped["path"],
                                                                        skipped["reason"], strict=True))
    # damaged films: a named reason with its numbers
    assert q.loc["NORMAL/tiny.png", "reason"] == ("dimensions_in_range: 8x8: shorter side 8 < limit 32 "
                                                  "(validate.min_side)")
    assert q.loc["NORMAL/zero.png", "reason"] == "decodable: empty_file: the file has 0 bytes"
    assert q.loc["PNEUMONIA/half-transparent.png", "reason"] == (
        "transparent_pixels: 50.0% of the film has alpha < 128 (limit 1.0%, validate.max_transparent_share)")
    assert q.loc["PNEUMONIA/garbled.jpeg", "reason"] == (
        "decodable: corrupt_data: libjpeg: Corrupt JPEG data: premature end of data segment")
    tiff = kept.set_index("path").loc["COVID19/pages.tiff"]
    assert tiff["frames"] == 3 and tiff["warnings"] == "multi_frame: 3 frames, frame 0 used"
    assert summary["warnings"] == {"multi_frame": 1} and summary["passed"]
    failed = {e["id"] for e in summary["expectations"] if not e["success"]}
    assert {"transparent_pixels", "multi_frame", "dimensions_in_range", "decodable"} <= failed


def test_multi_frame_is_a_warning_unless_critical(tmp_path):
    src = write_tree(tmp_path / "src", {**good_images("NORMAL"), **good_images("PNEUMONIA", seed=10),
                                        **good_images("COVID19", seed=20), "NORMAL/pages.tiff": multipage_tiff(2)})
    p = dir_params(src, validate={"critical": ["multi_frame"]})
    ingest.run(p, tmp_path / "raw")
    with pytest.raises(DataError, match=r"multi_frame \(expect_column_values_to_be_between on frames\): 1 unexpected"):
        validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "vreports")


def test_split_layout_accounts_for_files_beside_the_class_folders(tmp_path):
    src = write_tree(tmp_path / "dl", {
        "chest_xray/LICENSE.txt": b"CC BY 4.0",                  # beside the wrapper's content
        "chest_xray/train/NORMAL/a.png": encode(gray(seed=1)),
        "chest_xray/train/PNEUMONIA/b.png": encode(gray(seed=2)),
        "chest_xray/train/COVID19/c.png": encode(gray(seed=3)),
        "chest_xray/train/loose.png": encode(gray(seed=4)),      # directly under train/
        "chest_xray/extra/more/d.png": encode(gray(seed=5)),     # a folder that is not a split
        "chest_xray/extra/.hidden": b"x",
    })
    summary = ingest.run(dir_params(src), tmp_path / "raw", tmp_path / "reports")
    skipped = pd.read_csv(tmp_path / "reports" / "skipped.csv", keep_default_na=False)
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert reasons == {"LICENSE.txt": "outside_class_folder", "train/loose.png": "outside_class_folder",
                       "extra/.hidden": "outside_split_folders", "extra/more/d.png": "outside_split_folders"}
    assert summary["images"] == 3


# ---------------------------------------------------------------- CSV manifests
def test_csv_rows_follow_the_trees_rules_and_each_is_accounted_for_by_line(tmp_path):
    data = write_tree(tmp_path / "data", {
        "NORMAL/a.png": encode(gray(seed=1)), "sub/b.png": encode(gray(seed=2)), "c.png": encode(gray(seed=3)),
        "d.png": encode(gray(seed=4)), "e.png": encode(gray(seed=5)), "x, y.png": encode(gray(seed=6)),
        "notes.txt": b"text",
    })
    outside = write_tree(tmp_path / "outside", {"secret.txt": b"password", "secret.png": encode(gray(seed=9))})
    os.symlink("../outside/secret.png", data / "link.png")  # a relative link that leads out
    lines = [
        "path,label,patient_id",
        "NORMAL/a.png,NORMAL,p1",                        # 2
        "../outside/secret.txt,NORMAL,p2",               # 3 outside_root
        f"{outside / 'secret.png'},NORMAL,p3",           # 4 outside_root (absolute)
        "link.png,NORMAL,p4",                            # 5 link_outside_data_folder
        "notes.txt,NORMAL,p5",                           # 6 not_an_image_name
        "missing.png,NORMAL,p6",                         # 7 missing_file
        'sub/b.png,"NORMAL ",p7',                        # 8 → NORMAL/sub/b.png
        "c.png,pneumonia,p8",                            # 9 → PNEUMONIA/c.png
        "d.png,.Covid19,p9",                             # 10 → COVID19/d.png
        f"{data / 'e.png'},covid-19,p10",                # 11 absolute but inside → COVID19/e.png
        ",NORMAL,p11",                                   # 12 empty_path
        '"x, y.png",PNEUMONIA,"p\n12"',                  # 13-14 a quoted separator and line break
        "e.png,NORMAL,p13,surplus",                      # 15 malformed_row
    ]
    csv = data / "list.csv"
    csv.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())  # BOM and CRLF, as Excel writes
    summary = ingest.run(dir_params(csv), tmp_path / "raw", tmp_path / "reports")
    df = manifest.read(tmp_path / "raw" / "manifest.csv").set_index("path")
    assert sorted(df.index) == ["COVID19/d.png", "COVID19/e.png", "NORMAL/a.png", "NORMAL/sub/b.png",
                                "PNEUMONIA/c.png", "PNEUMONIA/x, y.png"]
    assert df.loc["PNEUMONIA/x, y.png", "patient_id"] == "p%0A12"  # a line break kept as %0A: one line per row
    assert sorted(p.name for p in (tmp_path / "raw").iterdir() if p.is_dir()) == ["COVID19", "NORMAL", "PNEUMONIA"]
    skipped = pd.read_csv(tmp_path / "reports" / "skipped.csv", keep_default_na=False)
    by_line = {int(r.line): r.reason for r in skipped.itertuples() if r.status == "skipped"}
    assert by_line == {3: "outside_root", 4: "outside_root", 5: "link_outside_data_folder", 6: "not_an_image_name",
                       7: "missing_file", 12: "empty_path", 15: "malformed_row"}
    assert len(df) + len(by_line) == 13  # every data row: an image or a skipped row
    assert all(d.startswith(f"list.csv line {n}") for n, d in zip(skipped["line"], skipped["detail"], strict=True))
    assert (outside / "secret.png").stat().st_nlink == 1 and (outside / "secret.txt").stat().st_nlink == 1
    assert not any(p.name.startswith("secret") for p in (tmp_path / "raw").rglob("*"))
    assert summary["skipped"]["by_reason"]["outside_root"] == 2


def test_csv_root_widens_or_narrows_the_confinement(tmp_path):
    write_tree(tmp_path / "shared", {"NORMAL/a.png": encode(gray(seed=1)), "PNEUMONIA/b.png": encode(gray(seed=2)),
                                     "COVID19/c.png": encode(gray(seed=3))})
    csv = tmp_path / "work" / "main.csv"
    csv.parent.mkdir()
    pd.DataFrame({"path": ["../shared/NORMAL/a.png", "../shared/PNEUMONIA/b.png", "../shared/COVID19/c.png"],
                  "label": ["NORMAL", "PNEUMONIA", "COVID19"]}).to_csv(csv, index=False)
    # the default root is the CSV's folder: every row is outside, and the error says what to set
    with pytest.raises(DataError, match=r"have no images.*outside_root.: 3.*data.root / --root"):
        ingest.run(dir_params(csv), tmp_path / "raw")
    summary = ingest.run(dir_params(csv, data={"root": str(tmp_path / "shared")}), tmp_path / "raw")
    assert summary["images"] == 3
    assert ingest.run(dir_params(csv), tmp_path / "raw2", root=tmp_path / "shared")["images"] == 3  # --root


def test_a_folders_manifest_accounts_for_the_files_it_does_not_name(tmp_path):
    src = write_tree(tmp_path / "src", {**good_images("NORMAL"), **good_images("PNEUMONIA", seed=10),
                                        **good_images("COVID19", seed=20), "README.md": b"about",
                                        "NORMAL/unlisted.png": encode(gray(seed=50))})
    listed = sorted(f for f in files_under(src) if f.endswith(".png") and "unlisted" not in f)
    pd.DataFrame({"path": listed, "label": [f.split("/")[0] for f in listed]}).to_csv(src / "MANIFEST.csv",
                                                                                      index=False)
    summary = ingest.run(dir_params(src), tmp_path / "raw", tmp_path / "reports")
    skipped = pd.read_csv(tmp_path / "reports" / "skipped.csv", keep_default_na=False)
    assert dict(zip(skipped["path"], skipped["reason"], strict=True)) == {"NORMAL/unlisted.png": "not_in_manifest",
                                                                         "README.md": "not_in_manifest"}
    assert summary["images"] == 9


def test_csv_separators_encodings_and_backslashes(tmp_path):
    data = write_tree(tmp_path / "data", {"NORMAL/a.png": encode(gray(seed=1)), "PNEUMONIA/b.png": encode(gray(seed=2)),
                                          "COVID19/c.png": encode(gray(seed=3))})
    with open(os.path.join(os.fsencode(data / "NORMAL"), b"r\xe9sum\xe9.png"), "wb") as fh:
        fh.write(encode(gray(seed=4)))
    rows = (b"path;label\nNORMAL\\a.png;NORMAL\nPNEUMONIA/b.png;PNEUMONIA\nCOVID19/c.png;COVID19\n"
            b"NORMAL/r\xe9sum\xe9.png;NORMAL\n")
    (data / "list.csv").write_bytes(rows)  # ';'-separated, one Latin-1 name, one Windows separator
    summary = ingest.run(dir_params(data / "list.csv"), tmp_path / "raw", tmp_path / "reports")
    df = manifest.read(tmp_path / "raw" / "manifest.csv")
    assert sorted(df["path"]) == ["COVID19/c.png", "NORMAL/a.png", "NORMAL/r%E9sum%E9.png", "PNEUMONIA/b.png"]
    assert {r["reason"] for r in summary["renamed"]["examples"]} == {"backslash_path", "non_utf8_name"}
    assert (tmp_path / "raw" / "NORMAL" / "r%E9sum%E9.png").is_file()


# ---------------------------------------------------------------- issue 32: the last input edges
SHIFT_JIS = ("胸部エックス線写真" * 10)[:90].encode("cp932")  # 90 characters, 180 bytes that are not UTF-8


def three_classes(folders=("NORMAL", "PNEUMONIA", "COVID19")) -> dict[str, bytes]:
    return {f"{c}/{c.strip().lower()}_{i}.png": encode(gray(64, 64, seed=10 * k + i))
            for k, c in enumerate(folders) for i in range(2)}


def report(tmp_path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "reports" / "skipped.csv", keep_default_na=False)


def test_a_long_non_utf8_name_is_shortened_and_reported(tmp_path):
    """A 90-character Shift-JIS name percent-encodes to 540 bytes: stored as a prefix + a hash, never a crash."""
    src = write_tree(tmp_path / "src", three_classes())
    for folder, seed in (("NORMAL", 1), ("PNEUMONIA", 2)):  # two long names that share their first 255 bytes
        with open(os.path.join(os.fsencode(src / folder), SHIFT_JIS + b"-%d.png" % seed), "wb") as fh:
            fh.write(encode(gray(64, 64, seed=90 + seed)))
    ingest.run(dir_params(src), tmp_path / "raw", tmp_path / "reports")
    df = manifest.read(tmp_path / "raw" / "manifest.csv")
    long = sorted(p for p in df["path"] if p.endswith((".png",)) and "~" in p)
    assert len(long) == 2 and all(len(p.split("/")[1].encode()) <= 255 for p in long)
    assert all((tmp_path / "raw" / p).is_file() for p in long)
    rows = report(tmp_path)
    assert [set(rows[rows["path"] == p]["reason"]) for p in long] == [{"non_utf8_name", "name_too_long"}] * 2
    detail = rows[(rows["path"] == long[0]) & (rows["reason"] == "name_too_long")]["detail"].item()
    assert detail.startswith("the name is 406 bytes") and "a file system stores at most 255" in detail
    assert detail.endswith(safe_name(os.fsdecode(SHIFT_JIS)) + "-1.png")  # the full name, for a person


def test_tree_images_are_stored_under_the_normalised_class_folder(tmp_path):
    src = write_tree(tmp_path / "src", {
        **three_classes(("normal", "PNEUMONIA ", "Covid-19")),
        "NORMAL/normal_0.png": encode(gray(64, 64, seed=77)),  # the same name in the folder it is merged into
    })
    summary = ingest.run(dir_params(src), tmp_path / "raw", tmp_path / "reports")
    df = manifest.read(tmp_path / "raw" / "manifest.csv")
    assert sorted(df["path"]) == ["COVID19/covid-19_0.png", "COVID19/covid-19_1.png", "NORMAL/normal_0-2.png",
                                  "NORMAL/normal_0.png", "NORMAL/normal_1.png", "PNEUMONIA/pneumonia_0.png",
                                  "PNEUMONIA/pneumonia_1.png"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir() if p.is_dir()) == ["COVID19", "NORMAL", "PNEUMONIA"]
    assert "class folder PNEUMONIA / is stored as PNEUMONIA/ (the normalised label)" in summary["warnings"]
    assert summary["renamed"]["by_reason"] == {"name_taken": 1}
    assert report(tmp_path).set_index("path").loc["NORMAL/normal_0-2.png", "detail"] == (
        "'normal/normal_0.png' is stored as 'NORMAL/normal_0.png': 'NORMAL/normal_0.png' is another image's path; "
        "stored as 'NORMAL/normal_0-2.png'")


def test_case_and_unicode_twins_and_backslashes_are_renamed_never_merged(tmp_path):
    """On a macOS or Windows checkout these names would collide or change meaning."""
    nfc, nfd = "caf\u00e9.png", "cafe\u0301.png"
    src = write_tree(tmp_path / "src", {
        **three_classes(), "NORMAL/Scan.png": encode(gray(64, 64, seed=51)),
        "NORMAL/scan.png": encode(gray(64, 64, seed=52)), f"NORMAL/{nfc}": encode(gray(64, 64, seed=53)),
        f"NORMAL/{nfd}": encode(gray(64, 64, seed=54)), "NORMAL/a\\b.png": encode(gray(64, 64, seed=55)),
    })
    ingest.run(dir_params(src), tmp_path / "raw", tmp_path / "reports")
    df = manifest.read(tmp_path / "raw" / "manifest.csv")
    keys = [unicodedata.normalize("NFC", p).casefold() for p in df["path"]]
    assert len(set(keys)) == len(df) == 11  # nothing merged: one file each on any checkout
    renamed = {r.path: r.reason for r in report(tmp_path).itertuples() if r.status == "renamed"}
    assert renamed == {"NORMAL/scan-2.png": "case_twin", f"NORMAL/{nfc[:-4]}-2.png": "unicode_twin",
                       "NORMAL/a%5Cb.png": "backslash_in_name"}
    stored = {p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*.png")}
    assert stored == set(df["path"])
    assert (tmp_path / "raw" / "NORMAL" / "scan-2.png").read_bytes() == (src / "NORMAL" / "scan.png").read_bytes()


def test_blank_and_non_finite_films_are_quarantined(tmp_path):
    src = write_tree(tmp_path / "src", {
        **three_classes(), "NORMAL/black.png": encode(np.zeros((64, 64), np.uint8)),
        "NORMAL/flat-grey.jpeg": encode(np.full((64, 64), 128, np.uint8), "JPEG"),
        "PNEUMONIA/nan-block.tiff": float_tiff_with_nan(),
    })
    p = dir_params(src)
    ingest.run(p, tmp_path / "raw")
    summary = validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "vreports")
    q = manifest.read(tmp_path / "validated" / "quarantine.csv").set_index("path")
    blank = ("blank_film: pixel standard deviation 0.00 < limit 2 grey levels (validate.min_pixel_std): the film "
             "shows nothing")
    assert q.loc["NORMAL/black.png", "reason"] == q.loc["NORMAL/flat-grey.jpeg", "reason"] == blank
    assert q.loc["PNEUMONIA/nan-block.tiff", "reason"] == (
        "decodable: non_finite_pixels: 256 of 4096 pixels (6.2%) are NaN or infinite (a float image with missing "
        "data)")
    assert summary["quarantine_reasons"] == {"blank_film": 2, "decodable": 1} and summary["usable"] == 6


@pytest.fixture(scope="module")
def gx_runner(tmp_path_factory):
    from components.core.data.validation import GxRunner

    v = tiny_params(validate={"phi": "quarantine"}).validate_  # every expectation the suite can hold
    return GxRunner(["COVID19", "NORMAL", "PNEUMONIA"], v, tmp_path_factory.mktemp("docs"))


GOOD_FACTS = {"decodable": [True], "width": [64], "height": [64], "transparent_share": [0.0], "pixel_std": [50.0],
              "frames": [1], "label": ["NORMAL"], "sha256": ["a" * 64], "patient_id": ["p1"], "patient_labels": [1],
              "phi_count": [0], "burned_in_annotation": [""]}
GOOD_SHARES = {"label": ["NORMAL"], "count": [1], "share": [0.5], "patient_id_share": [1.0]}


def suite_columns(runner, name: str) -> dict[str, list[str]]:
    """column → the ids of the suite's expectations on it."""
    out: dict[str, list[str]] = {}
    suite = runner.definitions[name].suite
    for e in suite.expectations:
        out.setdefault(e.column, []).append(e.meta["id"])
    return out


def test_every_expectation_that_cannot_run_stops_validate(gx_runner):
    """GX reports an expectation that raised as failed with 0 unexpected rows: it must stop validate (exit 4)
    with the exception's text, never pass as 'nothing to quarantine'. Each expectation, made to raise."""
    from components.core.contract.errors import EXIT_DATA

    checked = []
    for suite, good in (("images", GOOD_FACTS), ("classes", GOOD_SHARES)):
        assert all(r["success"] for r in gx_runner.run(suite, pd.DataFrame(good)))  # the good frame passes
        for column, ids in suite_columns(gx_runner, suite).items():
            with pytest.raises(DataError) as err:
                gx_runner.run(suite, pd.DataFrame(good).drop(columns=[column]))
            assert err.value.exit_code == EXIT_DATA
            text = str(err.value)
            assert "could not run, and a check that could not run is a failure" in text
            assert text.count(f'The column "{column}" in BatchData does not exist') == len(ids)
            assert all(f"{i} (" in text for i in ids)
            checked += ids
    expected = {"decodable", "dimensions_in_range", "transparent_pixels", "blank_film", "multi_frame",
                "label_in_classes", "unique_sha256", "patient_id_present", "one_label_per_patient", "deidentified",
                "class_share"}
    assert set(checked) == expected and len(checked) == 14


def test_impossible_bounds_stop_validate_instead_of_passing_everything(tmp_path):
    """min_side above max_side made GX raise, and a 1×1 image was usable (exit 0)."""
    src = write_tree(tmp_path / "src", {**three_classes(), "NORMAL/dot.png": encode(gray(1, 1))})
    p = dir_params(src)
    ingest.run(p, tmp_path / "raw")
    bad = p.model_copy(update={"validate_": p.validate_.model_copy(update={"min_side": 9000, "max_side": 8192})})
    with pytest.raises(DataError, match=r"dimensions_in_range \(expect_column_values_to_be_between on width\): "
                                        r"min_value cannot be greater than max_value"):
        validate.run(bad, tmp_path / "raw", tmp_path / "validated", tmp_path / "vreports")
    assert not (tmp_path / "validated").exists()
