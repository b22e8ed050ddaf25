import pandas as pd
import pytest

from components import split
from components.core.contract.errors import DataError
from components.core.data import manifest
from tests.support import tiny_params


def table(n_patients=60, per_patient=3, official_test=0):
    rows = []
    for i in range(n_patients):
        label = ("COVID19", "NORMAL", "PNEUMONIA")[i % 3]
        for j in range(1 + i % per_patient):
            rows.append({"path": f"{label}/p{i}_{j}.png", "label": label, "patient_id": f"p{i}",
                         "sha256": f"{i}-{j}", "status": "ok",
                         "official_split": "test" if i < official_test else "train"})
    return pd.DataFrame(rows)


def run(tmp_path, df, **cfg):
    manifest.write(df, tmp_path / "m.csv")
    out = tmp_path / f"splits{len(list(tmp_path.iterdir()))}"
    summary = split.run(tiny_params(split=cfg), tmp_path / "m.csv", out, tmp_path / "rep")
    return summary, {k: manifest.read(out / f"{k}.csv") for k in split.SPLITS}


def test_grouped_stratified_deterministic(tmp_path):
    s1, a = run(tmp_path, table())
    _, b = run(tmp_path, table())
    assert all(a[k].equals(b[k]) for k in a)
    assert s1["leakage"] == {"patient_id": 0, "sha256": 0}
    pids = [set(v["patient_id"]) for v in a.values()]
    assert not (pids[0] & pids[1] or pids[0] & pids[2] or pids[1] & pids[2])
    for part in a.values():
        assert set(part["label"]) == {"COVID19", "NORMAL", "PNEUMONIA"}
    assert 0.1 < len(a["test"]) / len(table()) < 0.35


def test_seed_changes_the_split(tmp_path):
    _, a = run(tmp_path, table(), seed=1)
    _, b = run(tmp_path, table(), seed=2)
    assert set(a["test"]["patient_id"]) != set(b["test"]["patient_id"])


def test_official_test_is_kept_and_overlapping_patients_removed(tmp_path):
    df = table(official_test=12)
    leak = df.iloc[[0]].assign(path="COVID19/leak.png", official_split="train", sha256="leak")
    summary, parts = run(tmp_path, pd.concat([df, leak]))
    assert set(parts["test"]["path"]) == set(df[df.official_split == "test"]["path"])
    assert "COVID19/leak.png" not in set(parts["train"]["path"]) | set(parts["val"]["path"])
    assert summary["official_test_used"] and any("removed 1 training images" in n for n in summary["notes"])
    summary, parts = run(tmp_path, df, use_official_test=False)
    assert not summary["official_test_used"]


def test_too_few_patients(tmp_path):
    with pytest.raises(DataError, match="only 3 patients"):
        run(tmp_path, table(n_patients=3))


def test_quarantined_rows_are_not_split(tmp_path):
    df = table()
    df.loc[0, "status"] = "quarantined"
    _, parts = run(tmp_path, df)
    assert df.loc[0, "path"] not in set(pd.concat(parts.values())["path"])
