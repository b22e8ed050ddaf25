import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from components.core.contract.errors import ParamsError
from components.core.stats import clinical, metrics


def test_nll_and_temperature_match_a_hand_computed_case():
    # three images with the same logits [2, 0]: two labelled 0, one labelled 1.
    # NLL(T) = -(2 log p + log(1-p)) / 3 with p = sigmoid(2/T) is minimal at p = 2/3, i.e. 2/T = ln 2.
    logits = np.array([[2.0, 0.0]] * 3)
    y = np.array([0, 0, 1])
    p = 1 / (1 + math.exp(-2.0))
    assert clinical.nll(logits, y, 1.0) == pytest.approx(-(2 * math.log(p) + math.log(1 - p)) / 3, rel=1e-9)
    assert clinical.fit_temperature(logits, y) == pytest.approx(2 / math.log(2), rel=1e-4)
    np.testing.assert_allclose(clinical.calibrated(logits, 2 / math.log(2))[0], [2 / 3, 1 / 3], rtol=1e-6)


def test_temperature_keeps_the_predicted_class():
    logits = np.random.default_rng(0).normal(size=(20, 3)) * 4
    y = logits.argmax(axis=1)
    t = clinical.fit_temperature(logits, np.where(np.arange(20) % 4 == 0, (y + 1) % 3, y))
    assert (clinical.calibrated(logits, t).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_temperature_can_reorder_one_class_across_images_with_three_classes():
    """softmax(z / T)_c depends on the other logits: with 3+ classes, two images can swap order in class c, so a
    one-vs-rest AUC or an operating point can move (the docstring used to say scaling never changes ranking)."""
    a, b = np.array([[2.0, 0.0, 0.0]]), np.array([[3.0, 2.9, -10.0]])
    at_1 = clinical.calibrated(np.r_[a, b], 1.0)[:, 0]
    at_10 = clinical.calibrated(np.r_[a, b], 10.0)[:, 0]
    assert at_1[0] > at_1[1] and at_10[0] < at_10[1]
    two = np.array([[2.0, 0.0], [3.0, 2.9]])  # with 2 classes the order is that of the logit difference
    assert np.argsort(clinical.calibrated(two, 1.0)[:, 0]).tolist() == np.argsort(
        clinical.calibrated(two, 10.0)[:, 0]).tolist()


def test_bootstrap_resamples_whole_patients():
    patients = np.array(["a", "a", "a", "b", "c", "c", "d"])
    for idx in clinical.patient_resamples(patients, 200, seed=3):
        counts = np.bincount(idx, minlength=len(patients))
        for p in set(patients):
            members = counts[patients == p]
            assert (members == members[0]).all()  # a patient's images move together
        assert len(set(patients[idx])) <= 4


def test_intervals_count_patients_not_images_and_carry_the_counts():
    # 10 patients with 10 images each; a patient's images are all right or all wrong
    patients = np.repeat(np.arange(10), 10)
    correct = np.repeat(np.arange(10) % 2 == 0, 10)
    y = np.zeros(100, int)
    proba = np.where(correct[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
    by_patient = clinical.confidence_intervals(y, proba, patients, ["A", "B"], 100, seed=0)["accuracy"]
    by_image = clinical.confidence_intervals(y, proba, np.arange(100), ["A", "B"], 100, seed=0)["accuracy"]
    assert by_patient["point"] == by_image["point"] == 0.5 and by_patient["patients"] == 10
    assert (by_patient["high"] - by_patient["low"]) > 2.5 * (by_image["high"] - by_image["low"])


def test_no_interval_collapses_at_one_on_a_perfect_small_test_split():
    # 8 COVID, 8 NORMAL, 8 PNEUMONIA patients, two images each, every image right
    y = np.repeat([0, 1, 2], 16)
    patients = np.array([f"p{i // 2}" for i in range(48)])
    proba = np.full((48, 3), 0.05)
    proba[np.arange(48), y] = 0.9
    ci = clinical.confidence_intervals(y, proba, patients, ["COVID19", "NORMAL", "PNEUMONIA"], 200)
    covid = ci["per_class"]["COVID19"]
    assert covid["sensitivity"]["point"] == 1.0 and covid["sensitivity"]["positives"] == 8
    assert covid["sensitivity"]["low"] == pytest.approx(0.6306, abs=1e-4)  # exact interval of 8/8, not [1, 1]
    assert covid["specificity"]["negatives"] == 16 and covid["roc_auc"]["positives"] == 8
    entries = [ci["accuracy"], ci["macro_f1"], ci["macro_roc_auc"]] + [
        e for pc in ci["per_class"].values() for e in pc.values()]
    assert all(e["low"] < e["high"] and e["low"] <= e["point"] <= e["high"] for e in entries)
    ref = ci["ece"]["calibrated_reference"]  # no interval for ECE: what a calibrated model would show instead
    assert "low" not in ci["ece"] and 0 < ref["median"] <= ref["high"] and "biased upward" in ci["ece"]["note"]


def test_the_ece_reference_flags_a_calibrated_model_about_one_time_in_twenty():
    """The percentile bootstrap of ECE covered a calibrated model's ECE of 0 in 0 of 300 sets of 49 images; the
    reference (what a calibrated model with these confidences shows) is exceeded by a calibrated model's ECE about
    5% of the time, and by an overconfident one's most of the time."""
    rng = np.random.default_rng(3)
    flagged = {"calibrated": 0, "overconfident": 0}
    sims = 200
    for _ in range(sims):
        conf = rng.uniform(0.5, 1.0, 49)
        proba = np.c_[conf, 1 - conf]
        for kind, truth in (("calibrated", conf), ("overconfident", 0.5 + (conf - 0.5) * 0.3)):
            y = np.where(rng.random(49) < truth, 0, 1)
            ref = clinical.calibrated_ece_reference(proba, 10, 400, seed=int(rng.integers(1 << 30)))
            flagged[kind] += metrics.expected_calibration_error(y, proba, 10) > ref["high"]
    assert 0.01 <= flagged["calibrated"] / sims <= 0.10 and flagged["overconfident"] / sims > 0.5


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
    t = clinical.threshold_for_sensitivity(scores, positive, 0.75)  # 3 of 4 positives needed (in sample)
    assert t == 0.3
    op = clinical.operating_point(scores, positive, t)
    assert op == {"threshold": 0.3, "sensitivity": 0.75, "specificity": 0.5, "ppv": 0.75, "npv": 0.5,
                  "tp": 3, "fp": 1, "fn": 1, "tn": 1}
    assert clinical.threshold_for_sensitivity(scores, positive, 1.0) == 0.2


def test_conformal_threshold_on_patients_keeps_its_promise_and_is_exact():
    # 9 positive patients (the lowest score of each counts), target 0.8: rank ceil(0.8 * 10) = 8
    scores = np.array([0.91, 0.95, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2123456789, 0.1, 0.05, 0.6])
    patients = np.array(["a", "a", "b", "c", "d", "e", "f", "g", "h", "i", "n1", "n2"])
    positive = np.r_[np.ones(10, bool), False, False]
    out = clinical.conformal_threshold(scores, positive, patients, 0.8)
    assert out["rank"] == 8 and out["positive_patients"] == 9
    assert out["threshold"] == 0.2123456789  # the exact float, not rounded
    assert out["expected_sensitivity"] == pytest.approx(0.8) and out["sensitivity_lower_bound"] < 0.8
    # simulated: over many validation draws the out-of-sample sensitivity meets the target on average
    rng = np.random.default_rng(0)
    sens = [np.mean(rng.normal(size=4000) >= clinical.conformal_threshold(
        rng.normal(size=20), np.ones(20, bool), None, 0.9)["threshold"]) for _ in range(400)]
    old = [np.mean(rng.normal(size=4000) >= clinical.threshold_for_sensitivity(
        rng.normal(size=20), np.ones(20, bool), 0.9)) for _ in range(400)]
    assert np.mean(sens) >= 0.9 - 0.01 > np.mean(old)


def test_too_few_positive_patients_for_the_target_is_refused_with_what_to_do():
    scores, positive = np.linspace(0.1, 0.9, 6), np.ones(6, bool)
    with pytest.raises(ParamsError, match=r"COVID19 = 0.95 cannot be kept with 6 positive validation patients.*"
                                          r"at least 19.*at most 0.857"):
        clinical.conformal_threshold(scores, positive, None, 0.95, name="COVID19")
    # the suggested target is rounded down: 8/9 = 0.8889 suggests 0.888, which is then kept (0.889 would not be)
    eight = np.linspace(0.1, 0.9, 8), np.ones(8, bool)
    with pytest.raises(ParamsError, match=r"at most 0.888 "):
        clinical.conformal_threshold(*eight, None, 0.95)
    assert clinical.conformal_threshold(*eight, None, 0.888)["rank"] == 8
    with pytest.raises(ParamsError):
        clinical.conformal_threshold(*eight, None, 0.889)


def test_macro_f1_interval_draws_the_class_shares_and_keeps_its_coverage():
    """F1 depends on the class mix through the false positives: with the shares drawn too, the interval covers
    the population macro F1 at small n (20 patients, a rare class wrongly predicted for the common ones)."""
    rng = np.random.default_rng(11)
    shares = np.array([0.2, 0.8])
    confusion = np.array([[0.8, 0.2], [0.15, 0.85]])  # P(predicted | true)
    joint = shares[:, None] * confusion
    tp = np.diag(joint)
    truth = float(np.mean(2 * tp / (joint.sum(axis=1) + joint.sum(axis=0))))
    covered, sims = 0, 200
    for _ in range(sims):
        y = (rng.random(20) < shares[1]).astype(int)
        if len(set(y)) < 2:
            y[0] = 1 - y[0]
        pred = np.where(rng.random(20) < confusion[y, y], y, 1 - y)
        lo, hi = clinical.macro_f1_posterior(y, pred, np.arange(20), 2, draws=1000, seed=int(rng.integers(1 << 30)))
        covered += lo <= truth <= hi
    assert covered / sims >= 0.93
    assert clinical.min_positive_patients(0.95) == 19 and clinical.min_positive_patients(0.5) == 1


def test_perfectly_separated_validation_leaves_the_temperature_at_one():
    # with no error on validation the NLL falls towards T → 0; sharpening to the bound would be a lie
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    assert clinical.fit_temperature(logits, np.array([0, 1, 0])) == 1.0
