"""Lineage (components/core/data/lineage.py): digests never ids, and the clean comparison ground by patient and by
image content."""

import hashlib

import numpy as np

from components.core.data import lineage


def test_an_image_either_model_saw_is_excluded_by_content_whatever_its_name():
    """A file without a patient id is its own patient (file:<path>): renamed or re-ingested, only its sha256
    shows that the champion trained on it."""
    sha = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(6)]
    champion = lineage.lineage(["file:a.png", "file:b.png"], ["file:c.png"], data_version="d", manifest_digest="m",
                              params_hash="h", git_commit="c", train_images=sha[:2], val_images=sha[2:3])
    assert champion["counts"]["train_images"] == 2 and lineage.seen_images(champion) == {h[:32] for h in sha[:3]}
    test_patients = np.array(["file:renamed-a.png", "file:d.png", "file:e.png", "file:f.png"])
    ground = lineage.comparison_ground(test_patients, set(), lineage.seen_patients(champion), 1,
                                      test_images=np.array([sha[0], sha[3], sha[4], sha[5]]), cand_images={sha[5][:32]},
                                      champ_images=lineage.seen_images(champion))
    assert ground["excluded"]["champion_saw_an_image"] == 1 and ground["excluded"]["candidate_saw_an_image"] == 1
    assert ground["keep"] == ["file:d.png", "file:e.png"] and ground["by_content"]
    old = lineage.comparison_ground(test_patients, set(), lineage.seen_patients(champion), 1,
                                   test_images=np.array(sha[:4]), champ_images=None)
    assert "patient digests only" in old["note"]


def test_lineage_holds_digests_never_ids():
    record = lineage.lineage(["person1", "person1", "person2"], ["person3"], data_version="d", manifest_digest="m",
                            params_hash="h", git_commit="c")
    assert record["counts"]["train"] == 2 and record["counts"]["val"] == 1
    assert "person1" not in str(record) and lineage.patient_digest("person1") in record["patients"]["train"]
    assert lineage.seen_patients(record) == {lineage.patient_digest(p) for p in ("person1", "person2", "person3")}
    assert lineage.seen_patients(None) is None and lineage.seen_images({"patients": {}}) is None
