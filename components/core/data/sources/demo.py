"""The embedded demo data (``data.source: demo``): synthetic films written straight into the output."""

from __future__ import annotations

from pathlib import Path

from components.core.data import synthetic
from components.core.contract.progress import progress


def write(classes: list[str], demo, out: Path) -> list[dict]:
    """Generate the demo set under ``out``; return its manifest rows. With ``demo.label_noise`` each row also
    says whether its label was planted wrong (``label_noise_planted``: for testing the label review; validate
    does not carry the column on, so training never reads it)."""
    rows = []
    noise = getattr(demo, "label_noise", 0.0)
    noise_model = getattr(demo, "label_noise_model", "uniform")
    flipped = synthetic.planted_flips(classes, demo.patients_per_class, noise, demo.seed, noise_model)
    gen = synthetic.generate(classes, demo.patients_per_class, demo.max_images_per_patient, demo.min_side,
                             demo.max_side, demo.seed, shortcut=demo.shortcut, label_noise=noise,
                             label_noise_model=noise_model)
    for rel, label, patient, data in progress(gen, "demo images"):
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        row = {"path": rel, "label": label, "patient_id": patient, "patient_id_origin": "manifest",
               "source": "demo", "official_split": ""}
        if noise > 0:
            row[PLANTED] = patient in flipped
        rows.append(row)
    return rows


PLANTED = "label_noise_planted"
