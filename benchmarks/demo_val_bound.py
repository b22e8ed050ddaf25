"""The bound behind the demo's target-sensitivity rule (``params/schema.py`` ``demo_val_patients``): how many
patients of a class the split step really puts into the validation split of the demo, against the estimate
``E = P x (1 - 1 / n_test) / n_val`` and the bound ``2E + 1`` the rule refuses above.

The demo's patients and their film counts come from the generator's own random streams (no films are drawn); the
split is the split step's ``carve``. A grid of 761 configurations (patients per class 4-100, 1-3 films each, test
fraction 0.15-0.4, validation fraction 0.1-0.2, demo seeds 0/1/7, label noise 0/0.1) takes about 1.5 minutes on 2
cores.

    python -m benchmarks.demo_val_bound
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from components.core.contract.params.schema import demo_val_patients, parse_params
from components.core.data import synthetic
from components.split import carve

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


def demo_manifest(patients: int, max_images: int, seed: int, noise: float) -> pd.DataFrame:
    """The demo's rows (path, label, patient_id) as ``synthetic.generate`` labels them, without drawing films."""
    flips = synthetic.planted_flips(CLASSES, patients, noise, seed)
    rows = []
    for pid, label in enumerate(c for c in CLASSES for _ in range(patients)):
        rng = np.random.default_rng([seed, pid])
        synthetic.patient_anatomy(rng)  # the same draws as generate(), in the same order
        patient = synthetic.patient_id(pid)
        given = flips[patient][1] if patient in flips else label
        rows += [{"path": f"{given}/{patient}-{j:02d}.png", "label": given, "patient_id": patient}
                 for j in range(int(rng.integers(1, max_images + 1)))]
    return pd.DataFrame(rows).sort_values("path").reset_index(drop=True)


def main() -> None:
    rows = []
    for patients, max_images, test, val, seed, noise in itertools.product(
            [4, 8, 12, 20, 40, 100], [1, 3], [0.15, 0.2, 0.25, 0.4], [0.1, 0.15, 0.2], [0, 1, 7], [0.0, 0.1]):
        if val + test >= 0.9:
            continue
        p = parse_params({"data": {"demo": {"patients_per_class": patients, "max_images_per_patient": max_images,
                                            "seed": seed, "label_noise": noise}},
                          "split": {"test_fraction": test, "val_fraction": val}, "evaluate": {"external": []}})
        df = demo_manifest(patients, max_images, seed, noise)
        try:
            rest, _ = carve(df, test, p.split.seed, "the test split")
            _, held = carve(rest, val / (1 - test), p.split.seed + 1, "the validation split")
        except Exception:  # too few patients to split: the split step refuses it too
            continue
        expected, bound = demo_val_patients(p)
        for c, n in held.groupby("label")["patient_id"].nunique().items():
            rows.append({"patients": patients, "films": max_images, "test": test, "val": val, "seed": seed,
                         "noise": noise, "class": c, "n": n, "E": round(expected, 2), "bound": bound})
    r = pd.DataFrame(rows)
    configs = len(r.drop_duplicates(["patients", "films", "test", "val", "seed", "noise"]))
    print(f"{configs} configurations x {len(CLASSES)} classes")
    print(f"max n / E: {(r.n / r.E).max():.2f}; max (n - 1) / E: {((r.n - 1) / r.E).max():.2f}; "
          f"n above the bound: {int((r.n > r.bound).sum())}")


if __name__ == "__main__":
    main()
