"""register and promote on a local sqlite store: versions reused per run, stale decisions refused, records kept."""

import json

import pytest

from components import evaluate, gate, register, train
from components.core.contract.errors import CxrError, RefusedError
from components.core.registry import registry
from components.ops import promote
from tests.components.test_gate import params
from tests.support import sqlite_tracking


@pytest.fixture(scope="module")
def registered(tiny_shards, tmp_path_factory, _migrated_mlflow_db):
    tmp = tmp_path_factory.mktemp("promote")
    with sqlite_tracking(tmp, _migrated_mlflow_db) as mp:
        mp.setenv("CXR_USER", "test-owner")
        p = params()
        train.run(p, tiny_shards, tmp / "models", tmp / "state")
        evaluate.run(p, tmp / "models", tiny_shards, tmp / "eval", tmp / "metrics.json")
        gate.run(p, tmp / "metrics.json", tmp / "models", tiny_shards, tmp / "gate.json")
        first = register.run(p, tmp / "gate.json", tmp / "models", tmp / "metrics.json", tmp / "reg")
        yield p, tmp, first


def test_register_writes_lineage_tags_and_reuses_the_runs_version(registered):
    p, tmp, first = registered
    assert first["registered"] and not first["reused_version"] and first["gated_against"] == "none"
    tags = registry.client().get_model_version(p.registry.model_name, first["version"]).tags
    lineage = json.loads((tmp / "models" / "lineage.json").read_text())
    assert tags["lineage.seen_digest"] == lineage["seen_digest"] and tags["manifest_digest"]
    assert int(tags["lineage.train_patients"]) == lineage["counts"]["train"] > 0
    again = register.run(p, tmp / "gate.json", tmp / "models", tmp / "metrics.json", tmp / "reg2")
    assert again["version"] == first["version"] and again["reused_version"]
    card = (tmp / "reg2" / "model_card.md").read_text()
    assert "## Gate" in card and "| check | value | 95% CI |" in card


def test_promotion_refuses_a_stale_decision_and_records_a_forced_one(registered):
    p, _, first = registered
    name = p.registry.model_name
    out = promote.promote(p)
    assert out["champion"] == first["version"] and out["record"]["by"] == "test-owner"
    client = registry.client()
    tags = client.get_model_version(name, first["version"]).tags
    assert tags["promoted_from"] == "none" and tags["promoted_reason"] == "gate passed against champion none"
    # a second version whose gate decision was made before v1 became champion
    import mlflow

    stale = mlflow.register_model(f"runs:/{first['run_id']}/model", name,
                                  tags={registry.GATE_TAG: "true", "gated_against": "none"})
    with pytest.raises(RefusedError, match=rf"gated against champion none, but the champion is now {first['version']}"):
        promote.promote(p, version=stale.version)
    with pytest.raises(CxrError, match="--force needs --reason"):
        promote.promote(p, version=stale.version, force=True)
    forced = promote.promote(p, version=stale.version, force=True, reason="hotfix approved by the model owner")
    assert forced["forced"] and forced["previous_champion"] == first["version"]
    tags = client.get_model_version(name, stale.version).tags
    assert tags["promotion_forced"] == "true" and tags["promoted_reason"] == "hotfix approved by the model owner"
    back = promote.rollback(p, reason="hotfix reverted")
    assert back["champion"] == first["version"]
    history = json.loads(client.get_model_version(name, first["version"]).tags["alias_history"])
    assert [(e["event"], e["from"], e["to"]) for e in history] == [
        ("promote", "none", first["version"]), ("rollback", str(stale.version), first["version"])]


def test_ungated_versions_are_never_promoted(registered):
    p, _, first = registered
    import mlflow

    ungated = mlflow.register_model(f"runs:/{first['run_id']}/model", p.registry.model_name)
    with pytest.raises(RefusedError, match="no passed gate"):
        promote.promote(p, version=ungated.version, force=True, reason="even forced: a gate is required")
