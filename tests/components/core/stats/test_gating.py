"""The gate's statistics on constructed predictions whose paired differences are known."""


import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from components.core.contract.errors import ParamsError
from components.core.contract.params.gate import GateConfig
from components.core.data import lineage
from components.core.stats import clinical, comparison, decision, gating
from components.core.stats import intervals as I
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
    return {c["metric"]: c for c in comparison.non_inferiority_checks(paired, GateConfig(**gate))}


def accuracy_check(b: int, c: int, n: int, plan: bool = True, **gate) -> dict:
    """The paired accuracy check alone, from its discordant counts (one image per patient)."""
    lo, hi = I.tango_interval(b, c, n)
    paired = {"accuracy": {"candidate": None, "champion": None, "difference": (b - c) / n,
                           "ci": (round(float(lo), 4), round(float(hi), 4)), "kind": "proportion", "b": b, "c": c,
                           "n": n, "patients": n}}
    return comparison.non_inferiority_checks(paired, GateConfig(**gate), plan=plan)[0]


def test_a_model_against_itself_never_fails_and_passes_where_the_patients_suffice():
    y, patients = cohort()
    proba = model(y, missed_covid=5)
    paired = comparison.paired_comparison(y, proba, proba, patients, CLASSES, ["COVID19"], 0.95, 100)
    assert set(paired) == {"accuracy", "macro_f1", "macro_roc_auc", "roc_auc.COVID19"}  # no matched operating points
    assert all(d["difference"] == 0 for d in paired.values())
    assert all(d["ci"][0] < 0 <= d["ci"][1] for d in paired.values())  # never collapsed to [0, 0] below
    checks = checks_of(paired)
    assert checks["accuracy"]["status"] == "passed" and not checks["accuracy"]["superior"]  # 200 patients, b = c = 0
    assert not any(c["status"] == "failed" for c in checks.values())
    # the macro AUC's margin (0.02) is narrower than what 200 patients can show: the comparison cannot tell
    auc = checks["macro_roc_auc"]
    assert auc["status"] == "inconclusive" and auc["power"] < 0.95 and auc["patients_needed"] > 200
    assert auc["joint_power"] < 0.95 and "inconclusive" in auc["note"] and not auc["passed"]
    assert checks_of(paired, on_underpowered="thresholds_only")["macro_roc_auc"]["passed"]


def test_a_clearly_worse_candidate_fails_and_a_clearly_better_one_is_superior():
    y, patients = cohort()
    good = model(y, missed_covid=0)
    bad = good.copy()
    bad[np.flatnonzero(y == 0)[:30]] = [0.03, 0.9, 0.07]  # 30 COVID patients now score below every negative
    worse = checks_of(comparison.paired_comparison(y, bad, good, patients, CLASSES, ["COVID19"], 0.95, 100))
    for metric in ("accuracy", "roc_auc.COVID19", "macro_f1"):
        assert worse[metric]["status"] == "failed" and worse[metric]["ci"][1] < 0, metric
        assert worse[metric]["note"].startswith("shown worse")
    better = checks_of(comparison.paired_comparison(y, good, bad, patients, CLASSES, ["COVID19"], 0.95, 100))
    assert better["accuracy"]["passed"] and better["accuracy"]["superior"]


def test_an_interval_below_zero_fails_whatever_the_power_on_the_numbers_of_issue_28():
    """The two cases the old gate called inconclusive (and passed under thresholds_only)."""
    demo = accuracy_check(0, 4, 24, on_underpowered="thresholds_only")  # 24 patients, 4 more wrong
    assert demo["ci"] == [pytest.approx(-0.359, abs=1e-3), pytest.approx(-0.006, abs=1e-3)]
    assert demo["power"] < 0.05 and demo["status"] == "failed" and not demo["passed"]
    few = accuracy_check(0, 4, 8, on_underpowered="thresholds_only")  # 8 positive patients, 4 more misses
    assert few["ci"] == [pytest.approx(-0.785, abs=1e-3), pytest.approx(-0.013, abs=1e-3)]
    assert few["status"] == "failed" and not few["passed"]
    # the third case: on 800 patients, 2.75 points worse ([-0.044, -0.013]) was inconclusive (its own extra errors
    # lowered the power it was planned with)
    worse = accuracy_check(8, 30, 800)
    assert worse["ci"] == [pytest.approx(-0.044, abs=1e-3), pytest.approx(-0.013, abs=1e-3)]
    assert worse["status"] == "failed"


def test_the_power_is_planned_without_the_candidates_excess_errors():
    one = accuracy_check(10, 10, 800)
    many = accuracy_check(10, 40, 800)
    assert one["planning"]["discordance"] == many["planning"]["discordance"] == pytest.approx(21 / 802, abs=1e-4)
    assert one["power"] == many["power"]
    fixed = accuracy_check(10, 40, 800, planning_discordance=0.2)
    assert fixed["planning"]["discordance"] == 0.2 and fixed["planning"]["from"] == "gate.planning_discordance"
    assert fixed["power"] < one["power"]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(n=st.integers(2, 900), b=st.integers(0, 60), c=st.integers(0, 80))
@example(n=800, b=10, c=15)  # the old plan (all discordance, the excess errors included) went failed -> inconclusive
@example(n=800, b=5, c=24)
def test_the_verdict_is_monotone_in_the_candidates_errors(n, b, c):
    """More extra errors never give a milder status: one more patient only the champion gets right (c + 1, or
    c + 1 and n + 1), or one fewer only the candidate gets right (b - 1), is never milder."""
    assume(b + c + 1 <= n)
    severity = comparison.SEVERITY

    def status(b_, c_, n_):
        return severity[accuracy_check(b_, c_, n_, plan=False)["status"]]

    now = status(b, c, n)
    assert status(b, c + 1, n) >= now
    assert status(b, c + 1, n + 1) >= now
    if b > 0:
        assert status(b - 1, c + 1, n) >= status(b - 1, c, n) >= now


def test_the_paired_auc_interval_holds_its_level_when_the_two_models_score_differently():
    """Two equally good models whose scores differ (correlated, not copies): the interval of the paired ROC-AUC
    difference, and that of accuracy, cover the true difference 0 at >= 0.93, and a check with margin 0 would
    pass (lower bound > 0) at most ~2.5% of the time."""
    rng = np.random.default_rng(7)
    cover = {"roc_auc.COVID19": 0, "accuracy": 0}
    false_pass = dict.fromkeys(cover, 0)
    sims = 200
    for _ in range(sims):
        y = np.resize([0, 1, 2], 60)
        shared = rng.normal(0, 1, (60, 3))
        probs = []
        for _model in range(2):
            z = 2.0 * np.eye(3)[y] + shared + rng.normal(0, 0.8, (60, 3))
            probs.append(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))
        paired = comparison.paired_comparison(y, probs[0], probs[1], np.arange(60), CLASSES, ["COVID19"], 0.95)
        for m in cover:
            lo, hi = paired[m]["ci"]
            cover[m] += lo <= 0 <= hi
            false_pass[m] += lo > 0
    for m in cover:
        assert cover[m] / sims >= 0.93, (m, cover[m] / sims)
        assert false_pass[m] / sims <= 0.04, (m, false_pass[m] / sims)


def test_a_same_split_retrain_on_24_patients_is_inconclusive_and_says_what_it_would_take():
    """The demo's case: two seeds of one model, 24 test patients, the same accuracy; the old gate said "worse"."""
    y = np.repeat([0, 1, 2], 16)
    patients = np.array([f"p{i // 2}" for i in range(48)])
    cand, champ = np.full((48, 3), 0.05), np.full((48, 3), 0.05)
    cand[np.arange(48), y] = champ[np.arange(48), y] = 0.9
    cand[[3, 20]] = [0.2, 0.2, 0.6]  # one image of two patients each model gets wrong, not the same ones
    champ[5], champ[40] = [0.2, 0.6, 0.2], [0.6, 0.2, 0.2]
    gate = GateConfig()
    checks, info = decision.champion_checks(y, cand, champ, patients, CLASSES, ["COVID19", "PNEUMONIA"], gate, 0.95,
                                            200, 0)
    acc = next(c for c in checks if c["metric"] == "accuracy")
    assert acc["value"] == 0 and acc["status"] == "inconclusive" and acc["patients_needed"] > 200
    low, high = acc["patients_needed_range"]
    assert low < acc["patients_needed"] < high
    assert not any(c["status"] == "failed" for c in checks)
    text = info["summary"]
    assert text.startswith("Inconclusive: 24 test patients") and f"≈{info['patients_needed']:,} such patients" in text
    assert "(per check" in text and info["patients_needed_by"].endswith("(per check)")
    assert decision.verdict(checks)["decision"] == "inconclusive"


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


def test_a_patient_drawn_twice_is_two_patients_of_the_resample():
    patients = np.array(["a", "a", "b", "c"])
    for idx, ids in clinical.patient_resamples(patients, 50, seed=1, draw_ids=True):
        # every draw gets its own id: as many ids as draws, and a draw's images share it
        assert len(set(ids)) == 3 and len(ids) == len(idx)
        for d in set(ids):
            assert len(set(patients[idx][ids == d])) == 1


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
    assert GateConfig().margin("roc_auc.COVID19") == 0.05 and GateConfig().margin("accuracy") == 0.02
    assert GateConfig(non_inferiority_margin={"roc_auc.COVID19": 0.01}).margin("roc_auc.COVID19") == 0.01
    assert GateConfig(non_inferiority_margin={"roc_auc.COVID19": 0.01}).margin("roc_auc.PNEUMONIA") == 0.05
    assert GateConfig().on_underpowered == "fail" and GateConfig().min_power == 0.95
    assert GateConfig().planning_discordance is None
    with pytest.raises(ParamsError, match="no longer compares sensitivity or specificity at matched"):
        tiny_params(gate={"non_inferiority_margin": {"specificity": 0.05}})
    with pytest.raises(ParamsError, match="planning_discordance"):
        tiny_params(gate={"planning_discordance": 0})
    with pytest.raises(ParamsError, match="no operating point"):
        tiny_params(gate={"min_sensitivity": {"NORMAL": 0.9}}, evaluate={"target_sensitivity": {"COVID19": 0.9}})
    with pytest.raises(ParamsError, match="written reason"):
        tiny_params(gate={"accept_shortcut_risk": "ok"})
    with pytest.raises(ParamsError, match="max_regression: unknown key"):
        tiny_params(gate={"max_regression": 0.05})
    with pytest.raises(ParamsError, match="on_underpowered"):
        tiny_params(gate={"on_underpowered": "pass"})
