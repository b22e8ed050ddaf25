"""The source-bias audit sees DICOM acquisition facts (view, manufacturer, modality, pixel spacing)."""

import numpy as np
import pandas as pd

from components.core.data.bias import metadata_features, source_bias_audit
from components.core.contract.params.validate import BiasAuditConfig


def manifest(n: int = 48, seed: int = 0, view_follows_label: bool = True) -> pd.DataFrame:
    """Files alike in every way a file can be (size, bytes, format); only the header's view may differ."""
    rng = np.random.default_rng(seed)
    label = np.array(["NORMAL", "PNEUMONIA"] * (n // 2))
    if view_follows_label:  # AP for the sick, PA for the others, with a little noise
        view = np.where((label == "PNEUMONIA") ^ (rng.random(n) < 0.05), "AP", "PA")
    else:
        view = rng.choice(["AP", "PA"], n)
    return pd.DataFrame({
        "label": label, "patient_id": [f"p{i}" for i in range(n)],
        "width": 1024, "height": 1024, "bytes": 2_100_000, "channels": 1, "bit_depth": 12,
        "format": "DICOM", "mode": "MONOCHROME2", "view_position": view,
        "manufacturer": rng.choice(["ACME", "Other Corp"], n), "modality": "DX",
        "pixel_spacing": rng.choice(["0.143 x 0.143", "0.139 x 0.139", ""], n),
    })


def test_planted_view_label_correlation_is_flagged():
    report = source_bias_audit(manifest(), BiasAuditConfig(folds=4))
    assert report["flagged"] and report["balanced_accuracy"] > 0.85
    assert report["top_features"][0]["feature"].startswith("view_position_")
    assert "AP films" in report["warning"]
    assert report["by_header"]["view_position"]["AP"]["PNEUMONIA"] >= 20
    assert set(report["by_header"]) == {"view_position", "manufacturer", "modality"}


def test_view_independent_of_label_is_not_flagged_and_features_are_named():
    report = source_bias_audit(manifest(view_follows_label=False), BiasAuditConfig(folds=4))
    assert not report["flagged"]
    assert {"view_position_AP", "manufacturer_ACME", "modality_DX", "pixel_spacing_mm"} <= set(report["features"])


def test_manifest_without_dicom_facts_keeps_the_file_features_only():
    df = manifest().drop(columns=["view_position", "manufacturer", "modality", "pixel_spacing"])
    assert not any(c.startswith(("view_", "manufacturer_", "modality_", "pixel_")) for c in metadata_features(df))
    empty = manifest().assign(view_position="", manufacturer="", modality="", pixel_spacing="")
    assert list(metadata_features(empty).columns) == list(metadata_features(df).columns)
    assert "by_header" not in source_bias_audit(empty, BiasAuditConfig(folds=4))
