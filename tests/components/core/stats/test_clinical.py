import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from components.core.stats import clinical


def test_nll_and_temperature_match_a_hand_computed_case():
    # three images with the same logits [2, 0]: two labelled 0, one labelled 1.
    # NLL(T) = -(2 log p + log(1-p)) / 3 with p = sigmoid(2/T) is minimal at p = 2/3, i.e. 2/T = ln 2.
    logits = np.array([[2.0, 0.0]] * 3)
    y = np.array([0, 0, 1])
    p = 1 / (1 + math.exp(-2.0))
    assert clinical.nll(logits, y, 1.0) == pytest.approx(-(2 * math.log(p) + math.log(1 - p)) / 3, rel=1e-9)
    assert clinical.fit_temperature(logits, y) == pytest.approx(2 / math.log(2), rel=1e-4)
    np.testing.assert_allclose(clinical.calibrated(logits, 2 / math.log(2))[0], [2 / 3, 1 / 3], rtol=1e-6)


def test_temperature_keeps_the_ranking():
    logits = np.random.default_rng(0).normal(size=(20, 3)) * 4
    y = logits.argmax(axis=1)
    t = clinical.fit_temperature(logits, np.where(np.arange(20) % 4 == 0, (y + 1) % 3, y))
    assert (clinical.calibrated(logits, t).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_bootstrap_resamples_whole_patients():
    patients = np.array(["a", "a", "a", "b", "c", "c", "d"])
    for idx in clinical.patient_resamples(patients, 200, seed=3):
        counts = np.bincount(idx, minlength=len(patients))
        for p in set(patients):
            members = counts[patients == p]
            assert (members == members[0]).all()  # a patient's images move together
        assert len(set(patients[idx])) <= 4


def test_patient_bootstrap_is_wider_than_image_bootstrap_for_correlated_images():
    # 10 patients with 10 images each; a patient's images are all right or all wrong
    patients = np.repeat(np.arange(10), 10)
    correct = np.repeat(np.arange(10) % 2 == 0, 10)
    y = np.zeros(100, int)
    proba = np.where(correct[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
    by_patient = clinical.bootstrap_ci(y, proba, patients, ["A", "B"], 500, seed=0)["accuracy"]
    by_image = clinical.bootstrap_ci(y, proba, np.arange(100), ["A", "B"], 500, seed=0)["accuracy"]
    assert by_patient["point"] == by_image["point"] == 0.5
    assert (by_patient["high"] - by_patient["low"]) > 2 * (by_image["high"] - by_image["low"])


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(10):
        pos = rng.integers(0, 2, 40).astype(bool)
        scores = rng.integers(0, 5, 40) / 4
        if 0 < pos.sum() < 40:
            assert clinical.auc(pos, scores) == pytest.approx(roc_auc_score(pos, scores), abs=1e-12)


def test_threshold_for_target_sensitivity_and_operating_point():
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.5, 0.1])
    positive = np.array([True, True, True, True, False, False])
    t = clinical.threshold_for_sensitivity(scores, positive, 0.75)  # 3 of 4 positives needed
    assert t == 0.3
    op = clinical.operating_point(scores, positive, t)
    assert op == {"threshold": 0.3, "sensitivity": 0.75, "specificity": 0.5, "ppv": 0.75, "npv": 0.5,
                  "tp": 3, "fp": 1, "fn": 1, "tn": 1}
    assert clinical.threshold_for_sensitivity(scores, positive, 1.0) == 0.2


def test_perfectly_separated_validation_leaves_the_temperature_at_one():
    # with no error on validation the NLL falls towards T → 0; sharpening to the bound would be a lie
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    assert clinical.fit_temperature(logits, np.array([0, 1, 0])) == 1.0
