"""The embedded demo data: deterministic, chest-X-ray-like synthetic films.

Every film has a torso, two lung fields, a spine and mediastinum, a heart shadow, ribs and
clavicles. The class decides only the pathology:

* ``NORMAL``: clear lung fields;
* ``PNEUMONIA``: a lobar consolidation (one dense, irregular opacity in one lung);
* ``COVID19``: bilateral, peripheral, lower-zone ground-glass haze.

Findings vary like real ones (:func:`render`'s difficulty keywords): each film draws a severity, so
some findings are faint and small (a mild case) and some obvious; the haze may be patchy or lean to
one side. With the defaults a small CNN at 64 px reaches roughly 0.9 test accuracy, not 1.0, so
the gate, the CIs and calibration have something to tell apart (``severity=(1, 1)``,
``patchiness=0``, ``asymmetry=0`` give the old, saturated demo).

Size, aspect, format (JPEG/PNG), colour mode (gray/RGB), exposure and noise are drawn
independently of the class, so metadata cannot predict the label (unlike many real mixed-source
sets: the validate step's source-bias audit should stay quiet on this data). Anatomy is drawn
once per patient, so a patient's films look alike: a split that leaks patients would show it.

``shortcut`` (``data.demo.shortcut``) plants a class-dependent shortcut, only to prove that the
shortcut stress tests (:mod:`components.core.eval.shortcut`) catch one: ``corner_marker`` burns a bright
marker into the corner that belongs to the class (like a hospital's side marker), ``border`` draws a
black frame whose width depends on the class (like a scanner's collimation). Both are drawn after the
film is rendered and use no random draws, so ``none`` (the default) gives the same bytes as before.

``label_noise`` (``data.demo.label_noise``) plants wrong labels, only to prove that the label review
(``cxr review-labels``) finds them: :func:`planted_flips` picks that share of the patients (at least one
when the share is above 0) and gives each another class's label, drawn at random; their films are rendered as
their true class and filed under the wrong one, like a mislabelled study in a scraped folder. The choice
uses its own random stream, so the films are byte for byte those of a run without noise.
``label_noise_model: similar`` flips only between PNEUMONIA and COVID19, the two findings that look alike.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

PATHOLOGY = {"NORMAL": "clear", "PNEUMONIA": "lobar", "COVID19": "peripheral"}
SHORTCUTS = ("none", "corner_marker", "border")


def plant_shortcut(img: np.ndarray, kind: str, class_index: int) -> np.ndarray:
    """Draw a class-dependent shortcut on a rendered film (float, 0..1; changed in place and returned).

    ``corner_marker``: a white block of 9% of the shorter side, 3% in from the corner numbered
    ``class_index`` (top-left, top-right, bottom-right, bottom-left, then again). ``border``: a black
    frame of 3% × ``class_index`` of each side (none for the first class).
    """
    h, w = img.shape
    if kind == "corner_marker":
        side, inset = max(2, round(0.09 * min(h, w))), max(1, round(0.03 * min(h, w)))
        corner = class_index % 4
        top = inset if corner in (0, 1) else h - inset - side
        left = inset if corner in (0, 3) else w - inset - side
        img[top:top + side, left:left + side] = 1.0
    elif kind == "border" and class_index:
        bh, bw = round(0.03 * class_index * h), round(0.03 * class_index * w)
        img[:bh], img[h - bh:], img[:, :bw], img[:, w - bw:] = 0.0, 0.0, 0.0, 0.0
    elif kind not in SHORTCUTS:
        raise ValueError(f"unknown demo shortcut {kind!r} (allowed: {SHORTCUTS})")
    return img


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2


def _soft(d: np.ndarray, edge: float = 0.15) -> np.ndarray:
    """1 inside an ellipse distance field (d < 1), fading to 0 over ``edge``."""
    return np.clip((1.0 + edge - d) / edge, 0.0, 1.0)


def patient_anatomy(rng: np.random.Generator) -> dict[str, float]:
    return {
        "lung_rx": rng.uniform(0.15, 0.2),
        "lung_ry": rng.uniform(0.27, 0.33),
        "lung_cy": rng.uniform(0.47, 0.53),
        "lung_gap": rng.uniform(0.2, 0.25),
        "heart_r": rng.uniform(0.11, 0.15),
        "rib_freq": rng.uniform(10.0, 13.0),
        "torso_rx": rng.uniform(0.42, 0.47),
        "tilt": rng.uniform(-0.03, 0.03),
    }


# acquisition style of a demo "site" (``style=`` of :func:`render`/:func:`generate`); the defaults are today's films
STYLE = {"contrast": 1.0, "brightness": 0.0, "noise": 1.0}
# difficulty of the demo's findings (render's keywords): severity multiplies a finding's opacity and size,
# drawn per film; patchiness breaks the COVID19 haze into patches; asymmetry lets it favour one lung
SEVERITY = (0.5, 1.0)
PATCHINESS = 0.4
ASYMMETRY = 0.4


def render(label: str, anatomy: dict[str, float], rng: np.random.Generator, width: int, height: int,
           style: dict[str, float] | None = None, *, severity: tuple[float, float] = SEVERITY,
           patchiness: float = PATCHINESS, asymmetry: float = ASYMMETRY) -> np.ndarray:
    """One film as float32 in 0..1 (height × width). ``style`` shifts the acquisition (another "site"):
    ``contrast`` scales around mid-grey, ``brightness`` adds, ``noise`` multiplies the noise level; the
    random draws are the same, so the default style gives exactly the films of before.

    Difficulty: ``severity`` (low, high): the finding's opacity (and a lobar opacity's size) is scaled by a
    factor drawn uniformly in this range, per film. ``patchiness`` (0..1): how much of the COVID19 haze is
    broken up by a coarse random texture. ``asymmetry`` (0..1): how far the haze of one lung may fade.
    """
    st = {**STYLE, **(style or {})}
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = x / width, y / height
    x = x + anatomy["tilt"] * (y - 0.5)
    a = anatomy
    img = np.full((height, width), 0.05, np.float32)
    torso = _soft(_ellipse(x, y, 0.5, 0.6, a["torso_rx"], 0.55), 0.1)
    img += 0.45 * torso
    left_c, right_c = 0.5 - a["lung_gap"], 0.5 + a["lung_gap"]
    lung_l = _soft(_ellipse(x, y, left_c, a["lung_cy"], a["lung_rx"], a["lung_ry"]))
    lung_r = _soft(_ellipse(x, y, right_c, a["lung_cy"], a["lung_rx"], a["lung_ry"]))
    lungs = np.maximum(lung_l, lung_r)
    img -= 0.32 * lungs
    # ribs: bright arcs across the lung fields; clavicles near the top
    ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (a["rib_freq"] * y + 1.5 * (x - 0.5) ** 2 * a["rib_freq"]))
    img += 0.09 * lungs * (ribs > 0.75)
    clav = np.exp(-(((y - 0.2 - 0.15 * np.abs(x - 0.5)) / 0.012) ** 2)) * (np.abs(x - 0.5) < 0.3)
    img += 0.15 * clav
    # spine, mediastinum and heart (to the image right, the patient's left)
    img += 0.25 * np.exp(-(((x - 0.5) / 0.035) ** 2)) * torso
    heart = _soft(_ellipse(x, y, 0.56, 0.7, a["heart_r"] * 1.2, a["heart_r"] * 0.9), 0.3)
    img += 0.22 * heart
    kind = PATHOLOGY.get(label, "clear")
    sev = rng.uniform(*severity) if kind != "clear" else 1.0
    if kind == "lobar":
        side = rng.choice([left_c, right_c])
        cx = side + rng.uniform(-0.05, 0.05)
        cy = a["lung_cy"] + rng.uniform(-0.05, 0.2)
        size = 0.5 + 0.5 * sev  # a mild consolidation is smaller too
        rx, ry = rng.uniform(0.06, 0.11) * size, rng.uniform(0.06, 0.12) * size
        blob = _soft(_ellipse(x, y, cx, cy, rx, ry), 0.5)
        mottle = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1)).astype(np.float32)
        mottle = np.asarray(Image.fromarray(mottle, mode="F").resize((width, height), Image.Resampling.BICUBIC))
        img += sev * rng.uniform(0.22, 0.35) * blob * (1 + 0.25 * mottle) * lungs
    elif kind == "peripheral":
        patches = rng.normal(0, 1, (6, 6)).astype(np.float32)
        patches = np.asarray(Image.fromarray(patches, mode="F").resize((width, height), Image.Resampling.BICUBIC))
        texture = np.clip(1 - patchiness + patchiness * (0.5 + 0.5 * patches), 0, 1.5)
        fade = rng.uniform(1 - asymmetry, 1.0)  # one lung's haze may be fainter
        for c, weight in zip((left_c, right_c), (fade, 1.0) if rng.random() < 0.5 else (1.0, fade), strict=True):
            lateral = (x - c) * (1 if c > 0.5 else -1) / a["lung_rx"]  # 1 at the outer edge
            zone = np.clip(lateral + 0.3, 0, 1) * np.clip((y - a["lung_cy"] + 0.2) / 0.3, 0, 1)
            img += sev * weight * rng.uniform(0.25, 0.35) * zone * texture * lungs
    # exposure, blur and noise: independent of the class
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)
    img = img * rng.uniform(0.85, 1.1) + rng.uniform(-0.05, 0.05)
    img += rng.normal(0, rng.uniform(0.01, 0.035) * st["noise"], img.shape).astype(np.float32)
    if st["contrast"] != 1.0 or st["brightness"] != 0.0:
        img = (img - 0.5) * st["contrast"] + 0.5 + st["brightness"]
    return np.clip(img, 0, 1)


def encode(img: np.ndarray, rng: np.random.Generator, blur: bool = True) -> tuple[bytes, str]:
    """Encode as JPEG or PNG, gray or RGB, at random (independent of the class)."""
    im = Image.fromarray(np.rint(img * 255).astype(np.uint8), mode="L")
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    if rng.random() < 0.25:
        im = im.convert("RGB")
    buf = io.BytesIO()
    if rng.random() < 0.5:
        im.save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
        return buf.getvalue(), ".jpeg"
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), ".png"


def patient_id(index: int) -> str:
    return f"demo-p{index:05d}"


# the two classes whose findings look most alike (both opacities of the lung fields): the confusable pair that real
# label noise in these sets mostly flips between (``label_noise_model: similar``)
SIMILAR = ("PNEUMONIA", "COVID19")
NOISE_MODELS = ("uniform", "similar")


def planted_flips(classes: list[str], patients_per_class: int, label_noise: float,
                  seed: int, model: str = "uniform") -> dict[str, tuple[str, str]]:
    """The patients whose label :func:`generate` flips: ``patient_id → (true label, given label)``.

    ``round(label_noise × patients)`` patients (at least one when ``label_noise > 0``), chosen at random with
    their own stream (``seed``, "label-noise"). ``model``: ``uniform`` picks among all patients and gives each one
    of the other classes at random; ``similar`` picks among the patients of the :data:`SIMILAR` pair only (as many
    as uniform would, at most all of them) and gives each the pair's other class."""
    if label_noise <= 0:
        return {}
    if model not in NOISE_MODELS:
        raise ValueError(f"label noise model {model!r} is not one of {NOISE_MODELS}")
    n = len(classes) * patients_per_class
    rng = np.random.default_rng([seed, 0x6E015E])  # not a stream the films use
    count = max(1, round(label_noise * n))
    out = {}
    if model == "similar":
        if not set(SIMILAR) <= set(classes):
            raise ValueError(f"label noise model 'similar' flips {SIMILAR[0]} <-> {SIMILAR[1]}: data.classes "
                             f"{classes} lacks one of them")
        pool = [classes.index(c) * patients_per_class + i for c in SIMILAR for i in range(patients_per_class)]
        chosen = rng.permutation(pool)[:min(count, len(pool))]
        for pid in sorted(int(i) for i in chosen):
            true = classes[pid // patients_per_class]
            out[patient_id(pid)] = (true, SIMILAR[1 - SIMILAR.index(true)])
        return out
    chosen = rng.permutation(n)[:count]
    for pid in sorted(int(i) for i in chosen):
        true = classes[pid // patients_per_class]
        others = [c for c in classes if c != true]
        out[patient_id(pid)] = (true, others[int(rng.integers(len(others)))])
    return out


def generate(classes: list[str], patients_per_class: int, max_images_per_patient: int,
             min_side: int, max_side: int, seed: int, style: dict[str, float] | None = None,
             shortcut: str = "none", label_noise: float = 0.0, label_noise_model: str = "uniform"):
    """Yield ``(relative_path, label, patient_id, encoded_bytes)`` deterministically (``style``: see
    :func:`render`; ``shortcut``: see :func:`plant_shortcut`; ``label_noise``: the label, and folder, of the
    patients :func:`planted_flips` picks is another class's; their films show their true class)."""
    flips = planted_flips(classes, patients_per_class, label_noise, seed, label_noise_model)
    pid = 0
    for class_index, label in enumerate(classes):
        for _ in range(patients_per_class):
            prng = np.random.default_rng([seed, pid])
            anatomy = patient_anatomy(prng)
            n_images = int(prng.integers(1, max_images_per_patient + 1))
            patient = patient_id(pid)
            given = flips[patient][1] if patient in flips else label
            for j in range(n_images):
                rng = np.random.default_rng([seed, pid, j + 1])
                side = int(rng.integers(min_side, max_side + 1))
                aspect = rng.uniform(0.8, 1.25)
                w, h = (side, max(32, int(side / aspect))) if aspect > 1 else (max(32, int(side * aspect)), side)
                img = render(label, anatomy, rng, w, h, style)
                if shortcut != "none":
                    img = plant_shortcut(img, shortcut, class_index)
                data, ext = encode(img, rng)
                yield f"{given}/{patient}-{j:02d}{ext}", given, patient, data
            pid += 1
