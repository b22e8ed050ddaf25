"""The gate's statistics on constructed predictions whose paired differences are known."""


import numpy as np
import pytest

from components.core.contract.errors import ParamsError
from components.core.contract.params.gate import GateConfig
from components.core.data import lineage
from components.core.stats import comparison, gating
from tests.support import tiny_params

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


def cohort(n_covid=100, n_normal=50, n_pneumonia=50):
    """One image per patient; every model below is perfect on NORMAL/PNEUMONIA."""
    y = np.array([0] * n_covid + [1] * n_normal + [2] * n_pneumonia)
    return y, np.array([f"p{i}" for i in range(len(y))])


def model(y, missed_covid: int) -> np.ndarray:
    """Probabilities whose COVID19 score is below the 0.5 operating point for the first ``missed_covid`` cases."""
    proba = np.full((len(y), 3), 0.05)
    proba[np.arange(len(y)), y] = 0.9
    covid = np.flatnonzero(y == 0)[:missed_covid]
    proba[covid] = [0.3, 0.6, 0.1]
    return proba


OPS = {"COVID19": 0.5}


def test_served_intervals_use_the_operating_point_and_count_positive_patients():
    y, patients = cohort()
    proba = model(y, missed_covid=5)
    m = comparison.served_intervals(y, proba, patients, CLASSES, OPS, 0.95)
    sens = m["sensitivity.COVID19"]
    assert sens["point"] == pytest.approx(0.95) and sens["patients"] == 100 and sens["count"] == "positive patients"
    assert m["specificity.COVID19"]["point"] == 1.0 and m["specificity.COVID19"]["patients"] == 100
    assert m["specificity.COVID19"]["ci"][0] < 1.0  # 100 of 100 negatives: an exact interval, not [1, 1]
    lower = comparison.served_intervals(y, proba, patients, CLASSES, {"COVID19": 0.25}, 0.95)
    assert lower["sensitivity.COVID19"]["point"] == 1.0 and lower["accuracy"] == m["accuracy"]


def checks_of(paired, **gate):
    return {c["metric"]: c for c in comparison.non_inferiority_checks(paired, GateConfig(**gate), 200)}


def test_a_model_against_itself_is_non_inferior_where_the_patients_suffice_and_inconclusive_where_not():
    y, patients = cohort()
    proba = model(y, missed_covid=5)
    paired = comparison.paired_comparison(y, proba, proba, patients, CLASSES, OPS, OPS, 0.95, 100)
    assert all(d["difference"] == 0 for d in paired.values() if d["difference"] is not None)
    assert all(d["ci"][0] < 0 < d["ci"][1] for d in paired.values())  # never [0, 0]
    checks = checks_of(paired)
    assert checks["accuracy"]["status"] == "passed" and not checks["accuracy"]["superior"]  # 200 patients
    assert checks["specificity.COVID19"]["status"] == "passed"  # 100 negatives, margin 0.05
    # 100 positive patients cannot show a 0.02 margin even with no disagreement at all (that alone needs 189;
    # planned with one pseudo-discordance, about twice as many)
    sens = checks["sensitivity.COVID19"]
    assert sens["status"] == "inconclusive" and not sens["passed"] and sens["power"] < 0.8
    assert 189 < sens["patients_needed"] < 500 and "positive patients" in sens["note"]
    assert checks_of(paired, on_underpowered="thresholds_only")["sensitivity.COVID19"]["passed"]


def test_a_clearly_worse_candidate_fails_and_a_clearly_better_one_is_superior():
    y, patients = cohort()
    good = model(y, missed_covid=0)
    bad = good.copy()
    bad[np.flatnonzero(y == 0)[:30]] = [0.03, 0.9, 0.07]  # 30 COVID patients now score below every negative
    worse = checks_of(comparison.paired_comparison(y, bad, good, patients, CLASSES, OPS, OPS, 0.95, 100))
    for metric in ("accuracy", "sensitivity.COVID19", "roc_auc.COVID19"):
        assert worse[metric]["status"] == "failed" and worse[metric]["ci"][1] < -0.02, metric
    assert worse["sensitivity.COVID19"]["matched"]["specificity"] == 1.0
    better = checks_of(comparison.paired_comparison(y, good, bad, patients, CLASSES, OPS, OPS, 0.95, 100))
    assert better["sensitivity.COVID19"]["passed"] and better["sensitivity.COVID19"]["superior"]


def test_matched_operating_points_compare_scores_not_threshold_noise():
    """Two models that rank every patient alike, whose validation splits put their thresholds in different
    places: at their own thresholds their specificities differ; at the sensitivity both reach they agree."""
    y, patients = cohort()
    rng = np.random.default_rng(0)
    score = np.where(y == 0, rng.uniform(0.3, 1.0, len(y)), rng.uniform(0.0, 0.7, len(y)))
    proba = np.c_[score, (1 - score) / 2, (1 - score) / 2]
    paired = comparison.paired_comparison(y, proba, proba, patients, CLASSES, {"COVID19": 0.5}, {"COVID19": 0.35},
                                          0.95)
    spec = paired["specificity.COVID19"]
    own = [float(np.mean(score[y != 0] < t)) for t in (0.5, 0.35)]
    assert own[0] - own[1] > 0.1 and spec["difference"] == 0.0
    assert spec["matched"]["sensitivity"] == pytest.approx(float(np.mean(score[y == 0] >= 0.5)), abs=1e-4)


def test_a_same_split_retrain_on_24_patients_is_inconclusive_and_says_what_it_would_take():
    """The demo's case: two seeds of one model, 24 test patients, the same accuracy; the old gate said "worse"."""
    y = np.repeat([0, 1, 2], 16)
    patients = np.array([f"p{i // 2}" for i in range(48)])
    cand, champ = np.full((48, 3), 0.05), np.full((48, 3), 0.05)
    cand[np.arange(48), y] = champ[np.arange(48), y] = 0.9
    cand[[3, 20]] = [0.2, 0.2, 0.6]  # one image of two patients each model gets wrong, not the same ones
    champ[5], champ[40] = [0.2, 0.6, 0.2], [0.6, 0.2, 0.2]
    ops = {"COVID19": 0.5, "PNEUMONIA": 0.5}
    paired = comparison.paired_comparison(y, cand, champ, patients, CLASSES, ops, ops, 0.95, 200)
    checks = comparison.non_inferiority_checks(paired, GateConfig(), 24)
    acc = next(c for c in checks if c["metric"] == "accuracy")
    assert acc["value"] == 0 and acc["status"] == "inconclusive" and acc["patients_needed"] > 200
    assert not any(c["status"] == "failed" for c in checks)
    text = comparison.inconclusive_summary(checks, 24, "fail", 0.8)
    total, _ = comparison.needs_patients(checks, 24)
    assert text.startswith("Inconclusive: 24 test patients") and f"needs ≈{total} such patients" in text


def test_comparison_ground_excludes_the_champions_patients_and_can_be_incomparable():
    patients = np.array([f"p{i}" for i in range(40)] * 2)  # two images each
    champ_seen = {lineage.patient_digest(f"p{i}") for i in range(15)}
    ground = lineage.comparison_ground(patients, set(), champ_seen, minimum=20)
    assert ground["status"] == "compared" and ground["patients_used"] == 25 and ground["patients_total"] == 40
    assert ground["excluded"]["champion_trained_or_validated"] == 15 and "p3" not in ground["keep"]
    few = lineage.comparison_ground(patients, set(), champ_seen, minimum=30)
    assert few["status"] == "incomparable" and "only 25 test patients" in few["reason"]
    unknown = lineage.comparison_ground(patients, set(), None, minimum=1)
    assert unknown["status"] == "incomparable" and "no lineage" in unknown["reason"]
    fail = gating.incomparable_check(few, "fail")
    assert not fail["passed"] and "gate.on_incomparable: thresholds_only" in fail["note"]
    assert gating.incomparable_check(few, "thresholds_only")["passed"]


def test_absolute_thresholds_on_the_lower_ci_bound_name_their_positive_patients():
    y, patients = cohort()
    stats = comparison.served_intervals(y, model(y, 5), patients, CLASSES, OPS, 0.95)
    gate = GateConfig(min_sensitivity={"COVID19": 0.93}, use_lower_ci=True)
    (check,) = [c for c in gating.threshold_checks(stats, gate, 200) if c["metric"] == "sensitivity.COVID19"]
    assert check["point"] == 0.95 and check["value"] == check["ci"][0] < 0.93 and not check["passed"]
    assert check["patients"] == 100 and check["count"] == "positive patients"
    point = GateConfig(min_sensitivity={"COVID19": 0.93})
    assert next(c for c in gating.threshold_checks(stats, point, 200) if c["metric"] == "sensitivity.COVID19")["passed"]


def test_operating_point_guarantees_from_validation_patients():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300)
    proba[y == 0, 0] += rng.uniform(0.2, 0.8, (y == 0).sum())
    proba /= proba.sum(axis=1, keepdims=True)
    patients = np.array([f"p{i}" for i in range(300)])
    out = gating.operating_point_guarantees(y, proba, patients, CLASSES, {"COVID19": 0.9}, 300, 0, 0.95)["COVID19"]
    lo, hi = out["ci"]
    assert lo <= out["threshold"] <= hi and hi - lo > 0 and out["gated"] is False
    assert out["expected_sensitivity"] >= 0.9 > out["sensitivity_lower_bound"]


def test_shortcut_risk_needs_a_written_reason():
    flagged = {"source_bias_audit": {"flagged": True, "balanced_accuracy": 0.99, "chance_balanced_accuracy": 0.33}}
    blocked = gating.shortcut_check(flagged, {}, None)
    assert not blocked["passed"] and "gate.accept_shortcut_risk" in blocked["note"]
    flag = {"set": "test", "test": "border_probe", "value": 0.62, "threshold": 0.58, "class": None}
    stress = gating.shortcut_check(None, {"shortcut": {"shortcut_risk": True, "flags": [flag]}}, None)
    assert not stress["passed"] and "border_probe (test) 0.62 >= 0.58" in stress["check"]
    accepted = gating.shortcut_check(flagged, {}, "Dr. A. accepts: research use on one hospital's data only")
    assert accepted["passed"] and accepted["accepted"].startswith("Dr. A.")
    assert gating.shortcut_check({"source_bias_audit": {"flagged": False}}, {}, None) is None


def test_gate_params_are_checked():
    assert GateConfig().margin("sensitivity.COVID19") == 0.02 and GateConfig().margin("roc_auc.COVID19") == 0.05
    assert GateConfig(non_inferiority_margin={"sensitivity.COVID19": 0.01}).margin("sensitivity.COVID19") == 0.01
    assert GateConfig(non_inferiority_margin={"sensitivity.COVID19": 0.01}).margin("specificity.COVID19") == 0.05
    assert GateConfig().on_underpowered == "fail" and GateConfig().min_power == 0.8
    with pytest.raises(ParamsError, match="no operating point"):
        tiny_params(gate={"min_sensitivity": {"NORMAL": 0.9}}, evaluate={"target_sensitivity": {"COVID19": 0.9}})
    with pytest.raises(ParamsError, match="written reason"):
        tiny_params(gate={"accept_shortcut_risk": "ok"})
    with pytest.raises(ParamsError, match="max_regression: unknown key"):
        tiny_params(gate={"max_regression": 0.05})
    with pytest.raises(ParamsError, match="on_underpowered"):
        tiny_params(gate={"on_underpowered": "pass"})
