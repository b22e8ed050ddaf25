"""The embedded demo data (``data.source: demo``): synthetic films written straight into the output."""

from __future__ import annotations

from pathlib import Path

from components.core.data import synthetic
from components.core.contract.progress import progress


def write(classes: list[str], demo, out: Path) -> list[dict]:
    """Generate the demo set under ``out``; return its manifest rows."""
    rows = []
    gen = synthetic.generate(classes, demo.patients_per_class, demo.max_images_per_patient, demo.min_side,
                             demo.max_side, demo.seed, shortcut=demo.shortcut)
    for rel, label, patient, data in progress(gen, "demo images"):
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        rows.append({"path": rel, "label": label, "patient_id": patient, "patient_id_origin": "manifest",
                     "source": "demo", "official_split": ""})
    return rows
