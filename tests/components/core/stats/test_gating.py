"""The gate's statistics on constructed predictions whose paired differences are known."""

import numpy as np
import pytest

from components.core.contract.config import GateConfig
from components.core.contract.errors import ParamsError
from components.core.stats import gating
from tests.conftest import tiny_params

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


def test_served_metrics_use_the_operating_point_not_argmax():
    y, _ = cohort()
    proba = model(y, missed_covid=5)
    m = gating.served_metrics(y, proba, CLASSES, OPS)
    assert m["sensitivity.COVID19"] == pytest.approx(0.95) and m["specificity.COVID19"] == 1.0
    lower = gating.served_metrics(y, proba, CLASSES, {"COVID19": 0.25})  # a lower threshold catches them all
    assert lower["sensitivity.COVID19"] == 1.0 and lower["accuracy"] == m["accuracy"]


def test_three_points_worse_covid_sensitivity_is_refused_where_a_flat_allowance_passed():
    y, patients = cohort()
    champion, candidate = model(y, missed_covid=5), model(y, missed_covid=8)  # 0.95 vs 0.92 at the operating point
    paired = gating.paired_bootstrap(y, candidate, champion, patients, CLASSES, OPS, OPS, 1000, 0, 0.95)
    sens = paired["sensitivity.COVID19"]
    assert sens["candidate"] == 0.92 and sens["champion"] == 0.95 and sens["difference"] == pytest.approx(-0.03)
    assert sens["ci"][1] <= 0 and sens["ci"][0] < -0.02  # paired: the CI is about the 3 discordant patients
    checks = {c["metric"]: c for c in gating.non_inferiority_checks(paired, GateConfig(), 200)}
    assert not checks["sensitivity.COVID19"]["passed"] and checks["accuracy"]["passed"] is False
    assert 0.92 >= 0.95 - 0.05  # what the old flat `max_regression: 0.05` compared: it would have passed


def test_a_model_is_non_inferior_to_itself_and_not_superior():
    y, patients = cohort()
    proba = model(y, missed_covid=5)
    paired = gating.paired_bootstrap(y, proba, proba, patients, CLASSES, OPS, OPS, 300, 0, 0.95)
    assert all(d["difference"] == 0 and d["ci"] == (0.0, 0.0) for d in paired.values())
    checks = gating.non_inferiority_checks(paired, GateConfig(), 200)
    assert checks and all(c["passed"] and not c["superior"] for c in checks)


def test_a_clearly_better_candidate_is_marked_superior():
    y, patients = cohort()
    paired = gating.paired_bootstrap(y, model(y, 0), model(y, 30), patients, CLASSES, OPS, OPS, 300, 0, 0.95)
    (sens,) = [c for c in gating.non_inferiority_checks(paired, GateConfig(), 200)
               if c["metric"] == "sensitivity.COVID19"]
    assert sens["passed"] and sens["superior"]


def test_patients_resample_together():
    """Two images of one patient: a paired difference moves in steps of whole patients."""
    y = np.array([0, 0, 1, 2])
    patients = np.array(["a", "a", "b", "c"])
    good, bad = model(y, 0), model(y, 2)  # the bad model misses both images of patient a
    paired = gating.paired_bootstrap(y, bad, good, patients, CLASSES, OPS, OPS, 200, 1, 0.95)
    assert paired["sensitivity.COVID19"]["difference"] == -1.0


def test_comparison_ground_excludes_the_champions_patients_and_can_be_incomparable():
    patients = np.array([f"p{i}" for i in range(40)] * 2)  # two images each
    champ_seen = {gating.patient_digest(f"p{i}") for i in range(15)}
    ground = gating.comparison_ground(patients, set(), champ_seen, minimum=20)
    assert ground["status"] == "compared" and ground["patients_used"] == 25 and ground["patients_total"] == 40
    assert ground["excluded"]["champion_trained_or_validated"] == 15 and "p3" not in ground["keep"]
    few = gating.comparison_ground(patients, set(), champ_seen, minimum=30)
    assert few["status"] == "incomparable" and "only 25 test patients" in few["reason"]
    unknown = gating.comparison_ground(patients, set(), None, minimum=1)
    assert unknown["status"] == "incomparable" and "no lineage" in unknown["reason"]
    fail = gating.incomparable_check(few, "fail")
    assert not fail["passed"] and "gate.on_incomparable: thresholds_only" in fail["note"]
    assert gating.incomparable_check(few, "thresholds_only")["passed"]


def test_lineage_holds_digests_never_ids():
    record = gating.lineage(["person1", "person1", "person2"], ["person3"], data_version="d", manifest_digest="m",
                            params_hash="h", git_commit="c")
    assert record["counts"] == {"train": 2, "val": 1}
    assert "person1" not in str(record) and gating.patient_digest("person1") in record["patients"]["train"]
    assert gating.seen_patients(record) == {gating.patient_digest(p) for p in ("person1", "person2", "person3")}
    assert gating.seen_patients(None) is None


def test_absolute_thresholds_on_the_lower_ci_bound():
    y, patients = cohort()
    stats = gating.bootstrap(y, model(y, 5), patients, CLASSES, OPS, 500, 0, 0.95)
    gate = GateConfig(min_sensitivity={"COVID19": 0.93}, use_lower_ci=True)
    (check,) = [c for c in gating.threshold_checks(stats, gate, 200) if c["metric"] == "sensitivity.COVID19"]
    assert check["point"] == 0.95 and check["value"] == check["ci"][0] < 0.93 and not check["passed"]
    point = GateConfig(min_sensitivity={"COVID19": 0.93})
    assert next(c for c in gating.threshold_checks(stats, point, 200) if c["metric"] == "sensitivity.COVID19")["passed"]


def test_threshold_ci_from_validation_patients():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300)
    proba[y == 0, 0] += rng.uniform(0.2, 0.8, (y == 0).sum())
    proba /= proba.sum(axis=1, keepdims=True)
    patients = np.array([f"p{i}" for i in range(300)])
    cis = gating.threshold_cis(y, proba, patients, CLASSES, {"COVID19": 0.9}, 300, 0, 0.95)
    lo, hi = cis["COVID19"]["ci"]
    assert lo <= cis["COVID19"]["threshold"] <= hi and hi - lo > 0


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
    assert GateConfig().margin("sensitivity.COVID19") == 0.02
    assert GateConfig(non_inferiority_margin={"sensitivity.COVID19": 0.01}).margin("sensitivity.COVID19") == 0.01
    assert GateConfig(non_inferiority_margin={"sensitivity.COVID19": 0.01}).margin("specificity.COVID19") == 0.05
    with pytest.raises(ParamsError, match="no operating point"):
        tiny_params(gate={"min_sensitivity": {"NORMAL": 0.9}}, evaluate={"target_sensitivity": {"COVID19": 0.9}})
    with pytest.raises(ParamsError, match="written reason"):
        tiny_params(gate={"accept_shortcut_risk": "ok"})
    with pytest.raises(ParamsError, match="max_regression: unknown key"):
        tiny_params(gate={"max_regression": 0.05})
