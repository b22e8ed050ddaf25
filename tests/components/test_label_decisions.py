"""Label decisions are data: planted demo noise, data/label_overrides.csv read strictly, applied by the real ingest
(confirmed lines only), proposals written by `cxr review-labels --accept N`, counted in the model card."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from components import ingest
from components.core.contract.errors import DataError
from components.core.data import manifest, overrides, synthetic
from components.core.registry import modelcard
from tests.support import tiny_params

ROOT = Path(__file__).resolve().parents[2]
HEADER = ",".join(overrides.COLUMNS) + "\n"
OLD_HEADER = "sha256,action,label,status,who,why,path\n"  # a file from before the when column: read as it is


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def noisy(noise: float = 0.1):
    return tiny_params(data={"demo": {"patients_per_class": 10, "max_images_per_patient": 2, "min_side": 64,
                                      "max_side": 80, "label_noise": noise}})


def test_the_repository_ships_an_empty_overrides_file_that_dvc_tracks():
    assert (ROOT / "data" / "label_overrides.csv").read_text() == HEADER
    assert overrides.read(ROOT / "data" / "label_overrides.csv").empty
    assert "data/label_overrides.csv" in (ROOT / "dvc.yaml").read_text().split("review-labels:")[0]


def test_planted_noise_flips_whole_patients_and_says_so_in_the_raw_manifest(tmp_path):
    ingest.run(noisy(0.1), tmp_path / "noisy")
    ingest.run(noisy(0.0), tmp_path / "clean")
    m = manifest.read(tmp_path / "noisy" / "manifest.csv")
    clean = manifest.read(tmp_path / "clean" / "manifest.csv")
    assert "label_noise_planted" not in clean.columns  # no noise, no column: the manifest is as before
    planted = m["label_noise_planted"].astype(str) == "True"
    assert m.loc[planted, "patient_id"].nunique() == 3  # 10% of 30 patients
    assert planted.groupby(m["patient_id"]).nunique().max() == 1  # all films of a flipped patient
    flips = synthetic.planted_flips(["COVID19", "NORMAL", "PNEUMONIA"], 10, 0.1, 0)
    for row in m[planted].itertuples():
        true, given = flips[row.patient_id]
        assert row.label == given != true and row.path.startswith(f"{given}/")
        twin = clean[clean["path"] == row.path.replace(given, true, 1)]
        # the very same film (pixels of its true class), filed under the wrong label
        assert (tmp_path / "noisy" / row.path).read_bytes() == (tmp_path / "clean" / twin["path"].iloc[0]).read_bytes()
    assert (m.loc[~planted, ["path", "label"]].to_numpy() == clean.loc[clean["path"].isin(m["path"]),
                                                                         ["path", "label"]].to_numpy()).all()


def test_overrides_are_read_strictly_with_the_line_and_what_to_do(tmp_path):
    p = tmp_path / "o.csv"
    p.write_text(OLD_HEADER + "abc,relabel,NORMAL,confirmed,ann,blurry,x.png\n"
                 + f"{'a' * 64},relabel,CAT,confirmed,ann,why,x.png\n"
                 + f"{'b' * 64},relabel,NORMAL,confirmed,{overrides.PROPOSER},why,x.png\n"
                 + f"{'c' * 64},delete,,proposed,ann,why,x.png\n"
                 + f"{'d' * 64},exclude,,confirmed,ann,,x.png\n")
    with pytest.raises(DataError) as err:
        overrides.read(p, ["COVID19", "NORMAL", "PNEUMONIA"])
    msg = str(err.value)
    for where, what in ((2, "64 hex"), (3, "CAT"), (4, "needs who"), (5, "action 'delete'"), (6, "why is empty")):
        assert f"{p}:{where}: " in msg and what in msg, (where, msg)
    p.write_text("sha256,label\n")
    with pytest.raises(DataError, match="lacks column"):
        overrides.read(p)
    with pytest.raises(DataError, match="not found"):
        overrides.read(tmp_path / "missing.csv")


def test_ingest_applies_confirmed_lines_only_and_counts_them(tmp_path):
    p = noisy(0.0)
    ingest.run(p, tmp_path / "before")
    m = manifest.read(tmp_path / "before" / "manifest.csv")
    a, b, c = (m.iloc[i] for i in (0, 5, 9))
    target = "NORMAL" if a["label"] != "NORMAL" else "PNEUMONIA"
    decisions = tmp_path / "label_overrides.csv"
    decisions.write_text(OLD_HEADER
                         + f"{sha(tmp_path / 'before' / a['path'])},relabel,{target},confirmed,Dr A,"
                           f"consolidation not visible,{a['path']}\n"
                         + f"{sha(tmp_path / 'before' / b['path'])},exclude,,confirmed,Dr A,lateral view,{b['path']}\n"
                         + f"{sha(tmp_path / 'before' / c['path'])},relabel,NORMAL,proposed,{overrides.PROPOSER},"
                           f"review rank 1,{c['path']}\n"
                         + f"{'e' * 64},exclude,,confirmed,Dr A,an image of another data set,elsewhere.png\n")
    summary = ingest.run(p, tmp_path / "after", tmp_path / "reports", label_overrides=decisions)
    after = manifest.read(tmp_path / "after" / "manifest.csv")
    assert after.set_index("path").loc[a["path"], "label"] == target
    assert after.set_index("path").loc[a["path"], overrides.BEFORE] == a["label"]
    assert b["path"] not in set(after["path"]) and not (tmp_path / "after" / b["path"]).exists()
    assert after.set_index("path").loc[c["path"], "label"] == c["label"]  # a proposal changes nothing
    assert len(after) == len(m) - 1
    ov = summary["label_overrides"]
    assert (ov["relabelled"], ov["excluded"], ov["proposed_pending"], ov["unmatched"], ov["lines"]) == (1, 1, 1, 1, 4)
    # the line that matched nothing is named with its line number (issue 32), in the report and the card
    assert ov["unmatched_lines"] == [{"line": 5, "sha256": "e" * 64, "action": "exclude", "path": "elsewhere.png"}]
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["label_overrides"]["unmatched_lines"] == \
        ov["unmatched_lines"]
    skipped = pd.read_csv(tmp_path / "reports" / "skipped.csv")
    assert skipped.set_index("path").loc[b["path"], "reason"] == "label_override_excluded"
    card = modelcard.render(name="m", metrics={}, train={}, params={}, ingest=summary)
    assert "1 images relabelled" in card and "1 excluded" in card and "1 proposals await" in card
    assert "1 confirmed lines matched no image (line 5)" in card
    # no file given: nothing applied, and the card says so
    plain = ingest.run(p, tmp_path / "plain")
    assert "label_overrides" not in plain
    assert "label decisions: none applied" in modelcard.render(name="m", metrics={}, train={}, params={}, ingest=plain)


def test_accept_writes_top_suspects_as_proposals_once(tmp_path):
    from components import review_labels

    out = tmp_path / "review"
    out.mkdir()
    rows = [{"path": f"NORMAL/p{i}.png", "patient_id": f"p{i}", "given_label": "NORMAL",
             "suggested_label": "PNEUMONIA", "score": 0.01 * i, "sha256": f"{i:064x}", "rank": i + 1, "split": "train",
             "fold": 0, "p_suggested": 0.9} for i in range(5)]
    pd.DataFrame(rows).to_csv(out / "suspects.csv", index=False)
    decisions = tmp_path / "label_overrides.csv"
    decisions.write_text(HEADER)
    first = review_labels.run(tiny_params(), tmp_path / "shards", out, accept=2, label_overrides=decisions)
    second = review_labels.run(tiny_params(), tmp_path / "shards", out, accept=2, label_overrides=decisions)
    lines = overrides.read(decisions, ["COVID19", "NORMAL", "PNEUMONIA"])
    assert first["proposed"] == 2 and second["proposed"] == 2 and second["suspects_already_listed"] == 2
    assert list(lines["sha256"]) == [f"{i:064x}" for i in range(4)]  # ranks 1-4, none twice
    assert set(lines["status"]) == {"proposed"} and set(lines["label"]) == {"PNEUMONIA"}
    assert "rank 1" in lines["why"].iloc[0]
    # proposals change nothing until a person confirms them
    assert overrides.apply(pd.DataFrame({"path": ["x"], "label": ["NORMAL"]}), lines, lambda _: b"",
                           "f")[2]["relabelled"] == 0


def test_a_decision_is_a_confirmed_line_written_at_once_and_undone_exactly(tmp_path):
    """What the review page writes: keep / relabel / exclude as confirmed lines with who and a UTC time, replacing a
    proposal in place; restore puts back what was there; a kept label changes nothing in ingest."""
    import re

    classes = ["COVID19", "NORMAL", "PNEUMONIA"]
    decisions = tmp_path / "label_overrides.csv"
    proposal = f"{'a' * 64},relabel,PNEUMONIA,proposed,{overrides.PROPOSER},,review: rank 1,NORMAL/a.png\n"
    decisions.write_text(HEADER + proposal)
    before = decisions.read_text()
    prev, line = overrides.decide(decisions, "A" * 64, "relabel", "PNEUMONIA", "Dr B", "shows a consolidation",
                                  "NORMAL/a.png", classes)
    assert prev["status"] == "proposed" and line["status"] == "confirmed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line["when"])
    lines = overrides.read(decisions, classes)
    assert len(lines) == 1 and lines.iloc[0]["who"] == "Dr B" and lines.iloc[0]["status"] == "confirmed"
    kept_prev, _ = overrides.decide(decisions, "b" * 64, "keep", "NORMAL", "Dr B", "label right", "NORMAL/b.png",
                                    classes)
    overrides.decide(decisions, "c" * 64, "exclude", "", "Dr B", "lateral view", "NORMAL/c.png", classes)
    lines = overrides.read(decisions, classes)
    assert list(lines["action"]) == ["relabel", "keep", "exclude"] and kept_prev is None
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed, nothing left behind
    # a kept label changes nothing; a kept line whose image is not there is named like any other unmatched line
    rows = pd.DataFrame({"path": ["b.png"], "label": ["NORMAL"]})
    out, _, summary = overrides.apply(rows, lines.iloc[[1]], lambda _: b"", "f")
    assert out["label"].tolist() == ["NORMAL"] and summary["confirmed"]["keep"] == 1
    assert summary["unmatched"] == 1 and summary["unmatched_lines"][0]["action"] == "keep"
    # undo, newest first: back to the proposal, byte for byte
    overrides.restore(decisions, "c" * 64, None, classes)
    overrides.restore(decisions, "b" * 64, kept_prev, classes)
    overrides.restore(decisions, "a" * 64, prev, classes)
    assert decisions.read_text() == before
    with pytest.raises(DataError, match="needs who"):
        overrides.decide(decisions, "d" * 64, "keep", "NORMAL", "", "x", "d.png", classes)
    with pytest.raises(DataError, match="CAT"):
        overrides.decide(decisions, "d" * 64, "relabel", "CAT", "Dr B", "x", "d.png", classes)
    assert decisions.read_text() == before  # a refused decision writes nothing


def test_similar_noise_flips_only_pneumonia_and_covid19_as_many_as_uniform():
    classes = ["COVID19", "NORMAL", "PNEUMONIA"]
    uniform = synthetic.planted_flips(classes, 40, 0.1, 5)
    similar = synthetic.planted_flips(classes, 40, 0.1, 5, "similar")
    assert len(similar) == len(uniform) == 12
    assert {(t, g) for t, g in similar.values()} <= {("PNEUMONIA", "COVID19"), ("COVID19", "PNEUMONIA")}
    assert synthetic.planted_flips(classes, 40, 0.1, 5, "uniform") == uniform  # the default is what it was
    with pytest.raises(ValueError, match="lacks"):
        synthetic.planted_flips(["NORMAL", "PNEUMONIA"], 10, 0.1, 0, "similar")
