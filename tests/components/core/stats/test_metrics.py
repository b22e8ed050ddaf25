import numpy as np
import pytest

from components.core.stats import metrics as M

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


def test_metrics_match_hand_computed_values():
    # 6 images: true  0 0 1 1 2 2 ; predicted 0 1 1 1 2 0
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[.8, .1, .1], [.3, .6, .1], [.1, .7, .2], [.2, .5, .3], [.1, .2, .7], [.5, .2, .3]])
    m = M.classification_metrics(y, proba, CLASSES)
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert m["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    covid = m["per_class"]["COVID19"]  # tp=1 fp=1 fn=1 tn=3
    assert covid["precision"] == 0.5 and covid["recall"] == 0.5 and covid["specificity"] == 0.75
    normal = m["per_class"]["NORMAL"]  # tp=2 fp=1 fn=0 tn=3
    assert normal["precision"] == pytest.approx(2 / 3, abs=1e-4) and normal["recall"] == 1.0
    assert normal["f1"] == pytest.approx(0.8, abs=1e-4)
    pneu = m["per_class"]["PNEUMONIA"]  # tp=1 fp=0 fn=1 tn=4
    assert pneu["precision"] == 1.0 and pneu["recall"] == 0.5 and pneu["specificity"] == 1.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3, abs=1e-4)
    # AUC for COVID19 one-vs-rest: positives .8 .3 vs negatives .1 .2 .1 .5 → pairs won 4 + 3 of 8
    assert covid["roc_auc"] == pytest.approx(7 / 8, abs=1e-4)


def test_ece_hand_computed():
    # two bins used: conf .9 (correct, correct) and conf .6 (correct, wrong)
    y = np.array([0, 0, 0, 1])
    proba = np.array([[.9, .1], [.9, .1], [.6, .4], [.6, .4]])
    # bin .9: acc 1.0 conf .9 → .1 * 2/4 ; bin .6: acc .5 conf .6 → .1 * 2/4
    assert M.expected_calibration_error(y, proba, bins=10) == pytest.approx(0.1, abs=1e-9)


def test_class_absent_from_test_is_reported_not_crashing():
    y = np.array([0, 0, 1])
    proba = np.array([[.9, .05, .05], [.2, .7, .1], [.1, .8, .1]])
    m = M.classification_metrics(y, proba, CLASSES)
    assert m["per_class"]["PNEUMONIA"]["recall"] is None and m["per_class"]["PNEUMONIA"]["roc_auc"] is None
    assert any("PNEUMONIA has no test images" in n for n in m["notes"])
    assert "n/a" in M.classification_report_text(m)
