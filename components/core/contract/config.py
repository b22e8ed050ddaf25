"""``params.yaml`` schema: one pydantic model per section, validated before any work starts.

Unknown keys, wrong types and impossible values raise :class:`ParamsError` with the key path
and the allowed values, e.g. ``data.sourse: unknown key (allowed: classes, demo, …)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.core.contract import backbones as _backbones
from components.core.contract.errors import ParamsError

Source = Literal["demo", "dir", "kaggle"]
Layout = Literal["auto", "classes", "rsna", "siim"]
Backbone = Literal[_backbones.NAMES]  # the backbone table (components/core/contract/backbones.py)
BACKBONES: tuple[str, ...] = get_args(Backbone)
# Smallest input side each backbone accepts with include_top=False (keras.applications checks >= 32).
MIN_IMAGE_SIZE: dict[str, int] = {b.name: b.min_size for b in _backbones.TABLE}

_TRAINABLE = re.compile(r"^(head|all|last:(\d+))$")


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DemoConfig(Section):
    """The embedded synthetic data set (``data.source: demo``)."""

    patients_per_class: int = Field(30, ge=2, le=10_000)
    max_images_per_patient: int = Field(3, ge=1, le=20)
    min_side: int = Field(160, ge=32)
    max_side: int = Field(320, ge=32)
    seed: int = 0
    # A planted, class-dependent shortcut for proving the shortcut tests (never for a real model):
    # corner_marker: a bright marker in a corner chosen by the class; border: a black frame whose
    # width depends on the class. none: the default films (no shortcut by construction).
    shortcut: Literal["none", "corner_marker", "border"] = "none"
    # Planted label noise, for proving the label review (never for a real model): this share of the patients
    # get another class's label on all their films (rendered as their true class); raw manifest column
    # label_noise_planted says which (validate drops it, so training never reads it).
    label_noise: float = Field(0.0, ge=0, lt=0.5)

    @model_validator(mode="after")
    def _sides(self) -> DemoConfig:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must be <= max_side ({self.max_side})")
        return self


class DataConfig(Section):
    """Where the images come from (adapters in ``components/core/data/sources/``)."""

    source: Source = "demo"
    path: str | None = None
    # A CSV manifest's paths must resolve (links followed) inside this folder; default: the CSV's folder.
    # Rows outside it are skipped as outside_root (links leading out: link_outside_data_folder), never copied.
    root: str | None = None
    # owner/dataset (a Kaggle data set) or competitions/<slug> (a competition's data)
    kaggle_dataset: str = "paultimothymooney/chest-xray-pneumonia"
    # How a dir/kaggle folder is read. auto: a CSV manifest (or MANIFEST.csv), else the RSNA or SIIM
    # layout when its label files are there, else class folders. classes: class folders or a CSV only.
    # rsna: RSNA Pneumonia Detection (stage_2_train_labels.csv, stage_2_detailed_class_info.csv,
    # stage_2_train_images/); siim: SIIM-FISABIO-RSNA COVID-19 (train_study_level.csv, train/).
    # Ignored by the demo source.
    layout: Layout = "auto"
    classes: list[str] = Field(default_factory=lambda: ["COVID19", "NORMAL", "PNEUMONIA"])
    label_aliases: dict[str, str] = Field(default_factory=dict)
    exclude_labels: list[str] = Field(default_factory=list)
    demo: DemoConfig = Field(default_factory=DemoConfig)

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError(f"needs at least 2 classes, got {v!r} (e.g. [NORMAL, PNEUMONIA])")
        if len(set(v)) != len(v):
            raise ValueError(f"classes must be unique, got {v!r}")
        for name in v:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(f"class {name!r} must be upper case letters, digits and _ (e.g. COVID19)")
        return v

    @model_validator(mode="after")
    def _source_needs(self) -> DataConfig:
        if self.source == "dir" and not self.path:
            raise ValueError("data.path is required when data.source is 'dir' (a class-folder tree or a CSV)")
        if self.source == "kaggle" and (self.kaggle_dataset.count("/") != 1 or "" in self.kaggle_dataset.split("/")):
            raise ValueError("data.kaggle_dataset must look like 'owner/dataset' or 'competitions/<slug>' "
                             "(e.g. competitions/rsna-pneumonia-detection-challenge)")
        bad = {k: v for k, v in self.label_aliases.items() if v not in self.classes}
        if bad:
            raise ValueError(f"label_aliases map to labels not in data.classes {self.classes}: {bad}")
        return self


class BiasAuditConfig(Section):
    enabled: bool = True
    folds: int = Field(5, ge=2, le=20)
    # Warn when the metadata-only classifier's balanced accuracy beats the majority baseline by more.
    warn_margin: float = Field(0.25, gt=0, lt=1)
    # Cross-validate on at most this many images (whole patients, drawn at random with a fixed seed): the forest's
    # time and memory grow with the rows (50,000 images: 210 s and 0.8 GB on 2 cores), its estimate hardly does.
    max_rows: int = Field(10_000, ge=100)


class ClassShareConfig(Section):
    min: float = Field(0.02, ge=0, le=1)
    max: float = Field(0.95, ge=0, le=1)


ExpectationId = Literal[
    "deidentified",
    "label_in_classes",
    "decodable",
    "dimensions_in_range",
    "transparent_pixels",
    "multi_frame",
    "unique_sha256",
    "class_share",
    "patient_id_present",
    "one_label_per_patient",
]


class ValidateConfig(Section):
    min_side: int = Field(32, ge=1)
    max_side: int = Field(8192, ge=1)
    # Checked from the header before decoding: a guard against decompression bombs.
    max_pixels: int = Field(40_000_000, ge=1)
    # A film with an alpha channel is drawn over black: refuse it (transparent_pixels) when more than this share
    # of its pixels has alpha < 128 (components.core.data.images.TRANSPARENT_ALPHA).
    max_transparent_share: float = Field(0.01, ge=0, le=1)
    class_share: ClassShareConfig = Field(default_factory=ClassShareConfig)
    # Expectations whose failure fails the step; the others quarantine rows or warn.
    critical: list[ExpectationId] = Field(
        default_factory=lambda: ["label_in_classes", "patient_id_present", "class_share"]
    )
    # patient_id_present: in every class at least this share of the images must carry a real patient id (from a
    # manifest, a file name or a DICOM header), not the one-patient-per-file fallback: without ids, images of one
    # patient can straddle the splits and the gate cannot tell which patients a model saw
    min_patient_id_share: float = Field(0.5, ge=0, le=1)
    # a written reason (who accepts it, and why) to go on when a class lacks patient ids; recorded in the summary
    accept_missing_patient_ids: str | None = None
    workers: int = Field(2, ge=1, le=256)
    bias_audit: BiasAuditConfig = Field(default_factory=BiasAuditConfig)
    # DICOM de-identification audit (PS3.15 basic profile attributes, BurnedInAnnotation): "report" counts them
    # in the summary and model card; "quarantine" also refuses every file that has one. A pseudonymised
    # PatientID counts too (public sets such as RSNA keep one): use "report" for those.
    phi: Literal["report", "quarantine"] = "report"

    @field_validator("accept_missing_patient_ids")
    @classmethod
    def _reason(cls, v: str | None) -> str | None:
        if v is not None and len(v.strip()) < 20:
            raise ValueError("a written reason of at least 20 characters (who accepts images without patient ids, "
                             f"and why), got {v!r}")
        return v.strip() if v else v


class SplitConfig(Section):
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    use_official_test: bool = True

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must be < 0.9 (something must be left to train on)")
        return self


# how a film is fitted to the model's square: pad: whole film, black letterbox bands; pad_edge: whole film, bands
# filled by repeating the film's edge (no sharp black rectangle whose height is the aspect ratio); crop: centre
# square (cuts the long side). The default was chosen by the shortcut tests: BENCHMARKS.md "Resize modes and shortcuts".
ResizeMode = Literal["pad", "pad_edge", "crop"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)


class PreprocessConfig(Section):
    resize: ResizeMode = "crop"
    workers: int = Field(2, ge=1, le=256)


Schedule = Literal["constant", "one_cycle", "cosine"]
# warmup (a fraction of the phase's steps) when a phase does not set it: fastai's pct_start for one_cycle
DEFAULT_WARMUP: dict[str, float] = {"constant": 0.0, "one_cycle": 0.25, "cosine": 0.0}


class Phase(Section):
    """One fine-tuning phase: which layers train, for how long, at which learning rate(s), on which schedule.

    ``lr`` is a number, ``auto`` (the LR range test picks it before the phase, ``train.lr_find``),
    ``previous`` (the rate the previous phase trained at, times ``lr_scale``: fastai's ``fine_tune`` halves
    the rate of its frozen phase, ``lr_scale: 0.5``), or fastai's ``[low, high]``: discriminative rates, read
    as ``lr: high, lr_mult: high / low``.
    ``lr_mult`` spreads the rate over ``lr_groups`` layer groups (:mod:`components.core.contract.backbones` names
    fastai's cut for 3): ``lr_spread: even`` is fastai's ``slice(lr / lr_mult, lr)`` (geometric: the earliest
    group at ``lr / lr_mult``, the head at ``lr``; ``fine_tune`` uses 100 over 3 groups), ``flat`` is
    fastai's ``slice(lr)`` (every body group at ``lr / lr_mult``, fastai's 10, the head at ``lr``; in a frozen
    phase only the BatchNorm layers that ``train_bn`` trains feel it).
    ``beta_2``, ``epsilon``: Adam's (Keras 0.999 / 1e-7; fastai 0.99 / 1e-5).
    ``schedule``: ``constant`` (ReduceLROnPlateau applies), ``one_cycle`` (fastai's ``fit_one_cycle``:
    cosine warm-up from ``lr / div`` to ``lr`` over the first ``warmup`` of the phase, cosine annealing
    to ``lr / div_final``) or ``cosine`` (linear warm-up from ``lr / div``, cosine annealing to
    ``lr / div_final``). ``weight_decay``: decoupled (AdamW-style, fastai's ``wd``) on kernels only.
    ``train_bn``: ``null`` follows ``train.freeze_batchnorm`` for the layers this phase trains; ``true``
    trains every BatchNorm layer of the backbone even when the backbone is frozen (fastai's ``train_bn``);
    ``false`` keeps them all in inference mode.
    """

    epochs: int = Field(ge=1, le=1000)
    trainable: str = "head"
    lr: float | Literal["auto", "previous"]
    lr_scale: float = Field(1.0, gt=0, le=100)
    lr_mult: float = Field(1.0, ge=1, le=1e6)
    lr_groups: int = Field(3, ge=2, le=64)
    lr_spread: Literal["even", "flat"] = "even"
    schedule: Schedule = "constant"
    warmup: float | None = Field(None, ge=0, lt=1)
    div: float = Field(25.0, ge=1)
    div_final: float = Field(1e5, ge=1)
    weight_decay: float = Field(0.0, ge=0, lt=1)
    amsgrad: bool = False
    beta_2: float = Field(0.999, gt=0, lt=1)
    epsilon: float = Field(1e-7, gt=0, lt=1)
    train_bn: bool | None = None
    # head-only phase on backbone features computed once (no augmentation in this phase): much faster
    cache_features: bool = False

    @model_validator(mode="before")
    @classmethod
    def _lr_range(cls, data: Any) -> Any:
        """fastai's ``lr: [low, high]`` becomes ``lr: high, lr_mult: high / low``."""
        if isinstance(data, dict) and isinstance(data.get("lr"), list | tuple):
            pair = data["lr"]
            if len(pair) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair) \
                    or not 0 < pair[0] <= pair[1] < 1:
                raise ValueError(f"lr as a list must be [low, high] with 0 < low <= high < 1, got {list(pair)!r}")
            if "lr_mult" in data:
                raise ValueError("give either lr: [low, high] or lr_mult, not both")
            data = {**data, "lr": float(pair[1]), "lr_mult": float(pair[1]) / float(pair[0])}
        return data

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0 < v < 1:
            raise ValueError(f"lr must be within (0, 1), 'auto', 'previous' or [low, high], got {v!r}")
        return v

    @model_validator(mode="after")
    def _cache(self) -> Phase:
        if self.cache_features and self.trainable != "head":
            raise ValueError("cache_features needs trainable: head (the backbone must stay frozen)")
        if self.cache_features and self.train_bn:
            raise ValueError("cache_features computes the backbone's features once, in inference mode: "
                             "train_bn: true cannot apply (drop one of them)")
        if self.schedule == "constant" and self.warmup:
            raise ValueError("warmup applies to schedule: one_cycle or cosine (a constant schedule has none)")
        if self.lr_scale != 1.0 and self.lr != "previous":
            raise ValueError("lr_scale applies to lr: previous (set the rate itself otherwise)")
        return self

    @field_validator("trainable")
    @classmethod
    def _trainable(cls, v: str) -> str:
        m = _TRAINABLE.match(v)
        if not m:
            raise ValueError(f"must be 'head', 'all' or 'last:N' with N >= 1, got {v!r}")
        if m.group(2) is not None and int(m.group(2)) < 1:
            raise ValueError(f"'last:N' needs N >= 1 (use 'head' to train only the head), got {v!r}")
        return v

    @property
    def warmup_fraction(self) -> float:
        return DEFAULT_WARMUP[self.schedule] if self.warmup is None else self.warmup


class HeadConfig(Section):
    pooling: Literal["max", "avg", "concat"] = "max"  # concat: average and max pooling side by side (fastai)
    dense_units: int = Field(512, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)  # before the last dense layer
    # fastai's create_head: BatchNorm before each dense layer (dense layers without bias, He-initialised)
    batchnorm: bool = False
    input_dropout: float = Field(0.0, ge=0, lt=1)  # before the first dense layer (fastai: dropout / 2)


class AugmentConfig(Section):
    rotation: float = Field(0.03, ge=0, le=0.5)  # fraction of a full turn (0.03 ≈ ±11°)
    zoom: float = Field(0.1, ge=0, lt=1)
    translate: float = Field(0.05, ge=0, lt=1)
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    horizontal_flip: bool = False  # a flipped chest film puts the heart on the right


class EarlyStoppingConfig(Section):
    monitor: str = "val_loss"
    patience: int = Field(5, ge=1)


class ReduceLrConfig(Section):
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(4, ge=1)
    min_lr: float = Field(1e-7, ge=0)


class LrFindConfig(Section):
    """The LR range test that ``lr: auto`` runs before a phase (and ``cxr lr-find`` by default)."""

    min_lr: float = Field(1e-7, gt=0, lt=1)
    max_lr: float = Field(1.0, gt=0, le=10)
    steps: int = Field(100, ge=5, le=10_000)
    # which suggestion trains: min_loss_div10 (the loss minimum / 10, fastai's lr_min), steepest, or valley
    # (fastai's lr_find default since 2.5)
    suggestion: Literal["min_loss_div10", "steepest", "valley"] = "min_loss_div10"

    @model_validator(mode="after")
    def _range(self) -> LrFindConfig:
        if self.min_lr >= self.max_lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be below max_lr ({self.max_lr})")
        return self


# backbones without BatchNorm layers
NO_BATCHNORM = frozenset(b.name for b in _backbones.TABLE if not b.batchnorm)


class TrainConfig(Section):
    """Training; the defaults are the ``seed1-vgg16`` recipe (``components/recipes/seed1-vgg16.yaml``)."""

    backbone: Backbone = "vgg16"
    # imagenet | none | path to a local weights file for the backbone (include_top=False)
    weights: str = "imagenet"
    image_size: int = Field(224, ge=1, le=1024)
    batch_size: int = Field(32, ge=1, le=4096)
    phases: list[Phase] = Field(
        default_factory=lambda: [Phase(epochs=20, trainable="last:6", lr=1e-4, amsgrad=True)],
        min_length=1,
    )
    head: HeadConfig = Field(default_factory=HeadConfig)
    class_weight: Literal["balanced", "none"] = "balanced"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    reduce_lr: ReduceLrConfig = Field(default_factory=ReduceLrConfig)
    freeze_batchnorm: bool = True
    # before each validation, re-estimate the statistics of trainable BatchNorm layers on up to this many
    # training batches (0: keep Keras' moving averages, which lag badly when an epoch has few steps)
    refresh_batchnorm: int = Field(200, ge=0, le=100_000)
    lr_find: LrFindConfig = Field(default_factory=LrFindConfig)
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    # temperature scaling fitted on the validation split, saved in the model (serving uses it)
    calibrate: bool = True
    seed: int = 42
    # data-parallel worker processes (tf.distribute.MultiWorkerMirroredStrategy, each with MirroredStrategy over
    # its GPUs); 1: one process. >1: a Kubeflow Trainer TrainJob on the cluster, local processes on 127.0.0.1
    # otherwise (components/core/model/distributed.py). train.batch_size stays the global batch.
    workers: int = Field(1, ge=1, le=256)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if v in ("imagenet", "none"):
            return v
        if not v.endswith((".h5", ".weights.h5", ".keras")):
            raise ValueError(f"must be 'imagenet', 'none' or a path to a .h5/.weights.h5 file, got {v!r}")
        return v

    @model_validator(mode="after")
    def _size(self) -> TrainConfig:
        minimum = MIN_IMAGE_SIZE[self.backbone]
        if self.image_size < minimum:
            raise ValueError(
                f"train.image_size {self.image_size} is below the minimum {minimum} for backbone {self.backbone}"
            )
        if _backbones.info(self.backbone).imagenet == "none" and self.weights == "imagenet":
            raise ValueError(f"backbone {self.backbone} has no ImageNet weights: set train.weights to 'none'")
        if self.phases[0].lr == "previous":
            raise ValueError("train.phases[1]: lr: previous needs a phase before it")
        if self.workers > 1:
            one_process = [name for name, used in (
                ("train.phases[].cache_features", any(ph.cache_features for ph in self.phases)),
                ("train.phases[].lr: auto", any(isinstance(ph.lr, str) for ph in self.phases))) if used]
            if one_process:
                raise ValueError(f"{' and '.join(one_process)} run on one process, but train.workers is "
                                 f"{self.workers}: set a learning rate / drop cache_features, or train.workers: 1")
        return self

    def warnings(self) -> list[str]:
        """Combinations that are allowed but rarely what anyone wants (the train step logs and records them;
        ``cxr recipe show/apply`` prints them)."""
        return train_warnings(self)


def _backbone_lr(phase: Phase) -> float | None:
    """The highest rate any backbone layer trains at in ``phase`` (None: no backbone layer, or ``auto``)."""
    if phase.trainable == "head" or isinstance(phase.lr, str):
        return None
    if phase.lr_mult <= 1:
        return phase.lr
    if phase.lr_spread == "flat":
        return phase.lr / phase.lr_mult
    groups = max(2, phase.lr_groups)
    return phase.lr * phase.lr_mult ** (-1 / (groups - 1))  # the last backbone group


def train_warnings(cfg: TrainConfig) -> list[str]:
    """Incoherent-looking combinations of ``train`` settings, each with the key and what to do."""
    out: list[str] = []
    pretrained = cfg.weights != "none"
    has_bn = cfg.backbone not in NO_BATCHNORM
    for i, ph in enumerate(cfg.phases, start=1):
        key = f"train.phases[{i}]"
        blr = _backbone_lr(ph)
        if pretrained and blr is not None and blr >= 1e-3:
            out.append(f"{key}: pretrained ({cfg.weights}) backbone layers train at lr {blr:g} "
                       f"(trainable: {ph.trainable}): rates >= 1e-3 usually destroy pretrained features; use "
                       "1e-5..1e-4, discriminative rates (lr: [low, high]) or train the head first")
        bn_trains = has_bn and (ph.train_bn is True or (ph.train_bn is None and not cfg.freeze_batchnorm
                                                          and ph.trainable != "head"))
        if bn_trains and cfg.batch_size < 16:
            out.append(f"{key}: BatchNorm layers train with train.batch_size {cfg.batch_size}: statistics of "
                       "fewer than 16 images are noise; raise the batch size or freeze them "
                       "(train.freeze_batchnorm: true / train_bn: false)")
        if has_bn and ph.trainable == "head" and ph.train_bn and cfg.batch_size < 32:
            out.append(f"{key}: a frozen backbone with its BatchNorm layers in training mode (train_bn: true) "
                       f"at batch size {cfg.batch_size}: their statistics follow noisy batches while the "
                       "convolutions stay fixed; use a batch of 32+ or train_bn: false")
        if ph.lr_mult > 1 and ph.trainable == "head" and not (has_bn and ph.train_bn):
            out.append(f"{key}: lr_mult {ph.lr_mult:g} has no effect when only the head trains")
        if ph.schedule == "one_cycle" and cfg.early_stopping.patience < ph.epochs:
            out.append(f"{key}: early stopping (patience {cfg.early_stopping.patience}) can end this "
                       f"{ph.epochs}-epoch one-cycle phase near its peak rate, before the annealing that makes "
                       "the schedule work; set train.early_stopping.patience >= the phase's epochs")
    if not pretrained and cfg.backbone != "small_cnn" and all(ph.trainable == "head" for ph in cfg.phases):
        out.append(f"train.weights is none and every phase trains only the head: the {cfg.backbone} backbone "
                   "stays random; unfreeze it (trainable: all) or use pretrained weights")
    if not pretrained and cfg.backbone == "small_cnn" and all(ph.trainable == "head" for ph in cfg.phases):
        out.append("small_cnn has no pretrained weights and every phase trains only the head: its "
                   "convolutions stay random; use trainable: all")
    bn_phases = [ph for ph in cfg.phases if ph.train_bn is True or (ph.train_bn is None and not cfg.freeze_batchnorm
                                                                      and ph.trainable != "head")]
    if has_bn and bn_phases and cfg.refresh_batchnorm == 0:
        out.append("BatchNorm layers train and train.refresh_batchnorm is 0: with few steps per epoch their moving "
                   "statistics lag behind the weights and validation sees another network (on 200 real images the "
                   "model collapsed to one class); keep refresh_batchnorm > 0")
    if cfg.workers > 1 and cfg.refresh_batchnorm:
        out.append("train.refresh_batchnorm is skipped with several workers (each would re-estimate the statistics "
                   "on its own): the moving averages are used, which needs enough steps per epoch")
    return out


class BootstrapConfig(Section):
    # patient resamples for what has no closed-form interval (ECE; the correlation of two models' macro F1/AUC
    # in the gate; the threshold's spread); 0 turns those off. Proportions and AUCs use exact/score intervals
    resamples: int = Field(1000, ge=0, le=100_000)
    seed: int = 0
    level: float = Field(0.95, gt=0.5, lt=1)


class ExternalSet(Section):
    """A test set from elsewhere: ingested and validated like the main data, never trained or tuned on."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    source: Literal["dir", "kaggle", "dvc", "demo"]
    path: str | None = None  # dir: a folder or CSV; dvc: dvc://<git-url>@<rev> (its data/raw)
    root: str | None = None  # dir: the folder a CSV's paths must stay inside (default: the CSV's folder)
    kaggle_dataset: str | None = None
    demo: DemoConfig | None = None  # demo: the synthetic generator with other patients (another seed)
    # a synthetic (demo) set is used when the main data are the demo too; with real data only when asked for
    with_real_data: bool = False
    label_aliases: dict[str, str] = Field(default_factory=dict)
    exclude_labels: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _where(self) -> ExternalSet:
        if self.source in ("dir", "dvc") and not self.path:
            raise ValueError(f"external set {self.name!r}: path is required for source {self.source!r}")
        if self.source == "dvc" and not str(self.path).startswith("dvc://"):
            raise ValueError(f"external set {self.name!r}: path must look like dvc://<git-url>@<rev>")
        if self.source == "kaggle" and not self.kaggle_dataset:
            raise ValueError(f"external set {self.name!r}: kaggle_dataset is required for source 'kaggle'")
        return self


class CentralFieldConfig(Section):
    """The central field the stress tests blank, as fractions of the part of the film the model sees (its box
    clipped to the square: inside its letterbox with ``pad``, the cropped square with ``crop``), so every resize
    mode blanks the same share of what the model sees ((bottom - top) x (right - left): 72% by default). Nearly
    the full width and most of the height of a frontal film: what lies outside is the top band (neck, shoulders,
    labels), the bottom band (abdomen) and thin side strips. It is not a lung mask: it holds the mediastinum and
    whatever lies over the chest (tubes, lines, leads)."""

    top: float = Field(0.1, ge=0, lt=1)
    bottom: float = Field(0.9, gt=0, le=1)
    left: float = Field(0.05, ge=0, lt=1)
    right: float = Field(0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> CentralFieldConfig:
        if self.top >= self.bottom or self.left >= self.right:
            raise ValueError(f"needs top < bottom and left < right, got {self.model_dump()}")
        return self

    @property
    def area(self) -> float:
        return (self.bottom - self.top) * (self.right - self.left)


class ShortcutMargins(Section):
    """How far above chance (or above the uniform-map share) a test may go before it flags a shortcut."""

    centre_masked: float = Field(0.2, gt=0, lt=1)  # balanced accuracy with the central field blanked
    border_probe: float = Field(0.25, gt=0, lt=1)  # balanced accuracy of a classifier on the outer frame
    attention_outside: float = Field(0.1, gt=0, lt=1)  # Grad-CAM share outside the central field − its area share
    source_probe: float = Field(0.3, gt=0, lt=1)  # balanced accuracy of source-from-features, within a class


class ShortcutConfig(Section):
    """Shortcut stress tests run by evaluate (components/core/eval/shortcut.py)."""

    enabled: bool = True
    max_images: int = Field(300, ge=10, le=100_000)  # per set (a class-stratified subset beyond it)
    central_field: CentralFieldConfig = Field(default_factory=CentralFieldConfig)
    frame: float = Field(0.12, gt=0, lt=0.5)  # the border probe reads this outer fraction of each side
    folds: int = Field(5, ge=2, le=20)
    margins: ShortcutMargins = Field(default_factory=ShortcutMargins)
    # a beat-chance test flags only when its one-sided p-value (against chance, per patient) is at most this
    alpha: float = Field(0.05, gt=0, lt=0.5)
    min_per_class: int = Field(5, ge=2, le=1000)  # the attention test needs this many images of a class
    seed: int = 0


class EvaluateConfig(Section):
    gradcam_per_class: int = Field(2, ge=0, le=50)
    top_losses: int = Field(12, ge=0, le=200)
    ece_bins: int = Field(10, ge=2, le=100)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    # per-class thresholds chosen on the validation split to reach these sensitivities
    target_sensitivity: dict[str, float] = Field(default_factory=dict)
    external: list[ExternalSet] = Field(default_factory=list)
    shortcut: ShortcutConfig = Field(default_factory=ShortcutConfig)

    @field_validator("target_sensitivity")
    @classmethod
    def _targets(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not 0 < x <= 1:
                raise ValueError(f"target_sensitivity.{k} must be within (0, 1], got {x}")
        return v

    @field_validator("external")
    @classmethod
    def _unique(cls, v: list[ExternalSet]) -> list[ExternalSet]:
        names = [e.name for e in v]
        if len(set(names)) != len(names):
            raise ValueError(f"external set names must be unique, got {names}")
        return v


class ExternalGate(Section):
    """Minimums for one external test set (``gate.external.<name>``), on its point estimates."""

    min_accuracy: float = Field(0.0, ge=0, le=1)
    min_macro_roc_auc: float = Field(0.0, ge=0, le=1)
    min_sensitivity: dict[str, float] = Field(default_factory=dict)  # at the served operating point


# metrics the candidate must be non-inferior to the champion on; roc_auc is per class with an operating point
# (one-vs-rest ROC-AUC); "roc_auc.COVID19" overrides one class
NON_INFERIORITY_KEYS = ("accuracy", "macro_f1", "macro_roc_auc", "roc_auc")
PER_CLASS_KEYS = ("roc_auc",)
# the comparisons at matched operating points were removed (issue 28: their intervals left out the thresholds' own
# noise); the served decision is gated by min_sensitivity / min_specificity
REMOVED_MARGIN_KEYS = ("sensitivity", "specificity")


class GateConfig(Section):
    # absolute thresholds (point estimates, or the lower CI bound with use_lower_ci)
    min_accuracy: float = Field(0.0, ge=0, le=1)
    min_macro_f1: float = Field(0.0, ge=0, le=1)
    min_roc_auc: float = Field(0.0, ge=0, le=1)
    # at the operating points serving uses (evaluate.target_sensitivity, chosen on the validation split)
    min_sensitivity: dict[str, float] = Field(default_factory=dict)
    min_specificity: dict[str, float] = Field(default_factory=dict)
    use_lower_ci: bool = False
    # paired non-inferiority against the champion, on test patients neither model trained or validated on:
    # passes when the lower bound of the CI of (candidate - champion) is above -margin
    non_inferiority_margin: dict[str, float] = Field(default_factory=lambda: {
        "accuracy": 0.02, "macro_f1": 0.03, "macro_roc_auc": 0.02, "roc_auc": 0.05})
    min_comparison_patients: int = Field(30, ge=1)
    # too few clean patients to compare: fail (default), or decide on the absolute thresholds only
    on_incomparable: Literal["fail", "thresholds_only"] = "fail"
    # the comparison is powered when, for two equally good models, all its checks would pass together with this
    # probability (a Bonferroni bound); then a check whose CI contains 0 but reaches below -margin fails, and two
    # equal models fail at most 1 - min_power of the time on it. Below it such a check is inconclusive. A CI
    # entirely below 0 fails whatever the power.
    min_power: float = Field(0.95, gt=0, lt=1)
    # the share of patients two equal models disagree on, for the power of the paired accuracy check; None: read
    # from the candidate's exclusive wins ((2b + 1) / (n + 2)), never from its excess errors
    planning_discordance: float | None = Field(None, gt=0, lt=1)
    # a check that cannot tell (underpowered, its CI containing 0 and reaching below -margin) is inconclusive: it
    # fails the gate (default, for real data), or the gate decides on the absolute thresholds (the demo)
    on_underpowered: Literal["fail", "thresholds_only"] = "fail"
    # a flagged shortcut (source-bias audit, stress tests) blocks registration unless a written reason accepts it
    accept_shortcut_risk: str | None = None
    external: dict[str, ExternalGate] = Field(default_factory=dict)

    @field_validator("min_sensitivity", "min_specificity")
    @classmethod
    def _unit(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not 0 <= x <= 1:
                raise ValueError(f"{k} must be within 0..1, got {x}")
        return v

    @field_validator("non_inferiority_margin")
    @classmethod
    def _margins(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            base = k.split(".", 1)[0]
            if base in REMOVED_MARGIN_KEYS:
                raise ValueError(f"non_inferiority_margin key {k!r}: the gate no longer compares sensitivity or "
                                 "specificity at matched operating points (their intervals left out the thresholds' "
                                 "noise); remove the key. The served decision is gated by gate.min_sensitivity / "
                                 "gate.min_specificity, the ranking by roc_auc")
            if base not in NON_INFERIORITY_KEYS or ("." in k and base not in PER_CLASS_KEYS):
                raise ValueError(f"non_inferiority_margin key {k!r}: use one of {list(NON_INFERIORITY_KEYS)}, or "
                                 "roc_auc.<CLASS>")
            if not 0 <= x < 1:
                raise ValueError(f"non_inferiority_margin.{k} must be within [0, 1), got {x}")
        return v

    @field_validator("accept_shortcut_risk")
    @classmethod
    def _reason(cls, v: str | None) -> str | None:
        if v is not None and len(v.strip()) < 20:
            raise ValueError("a written reason of at least 20 characters (who accepts the risk, and why), "
                             f"got {v!r}")
        return v.strip() if v else v

    def margin(self, metric: str) -> float:
        """The margin for ``accuracy`` … or ``roc_auc.<CLASS>`` (the class override, else the kind's)."""
        defaults = GateConfig.model_fields["non_inferiority_margin"].default_factory()
        for key in (metric, metric.split(".", 1)[0]):
            if key in self.non_inferiority_margin:
                return self.non_inferiority_margin[key]
        return defaults[metric.split(".", 1)[0]]


class RegistryConfig(Section):
    model_name: str = Field("cxr-classifier", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class MlflowConfig(Section):
    tracking_uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI overrides it
    experiment: str = Field("cxr", min_length=1)


RetrainReason = Literal["ood_rate", "image_drift", "prediction_drift", "live_accuracy"]


class CanaryConfig(Section):
    """``cxr deploy``: the canary's share of traffic and what rolls it back."""

    traffic_percent: int = Field(10, ge=1, le=99)
    analysis_seconds: float = Field(600, gt=0)     # watch the canary this long before promoting it
    max_error_rate: float = Field(0.02, ge=0, le=1)  # share of its /predict requests answered 5xx
    max_ood_rate: float = Field(0.25, ge=0, le=1)    # share of its predictions flagged unlike_training_data
    min_requests: int = Field(20, ge=1)            # fewer predictions in the analysis: roll back (fail closed)


class MonitorConfig(Section):
    """Out-of-distribution warning (train, serve) and the prediction-log monitor (``cxr monitor``)."""

    # share of in-distribution images (the validation split) flagged unlike_training_data: sets the threshold
    ood_false_alarm: float = Field(0.05, gt=0, lt=0.5)
    window_hours: float = Field(168, gt=0)          # `cxr monitor` reads the log of the last N hours
    min_predictions: int = Field(50, ge=5)          # fewer in the window: no verdict ("insufficient data")
    max_ood_rate: float = Field(0.15, gt=0, le=1)   # retrain when the window's OOD rate is above this
    drift_p_value: float = Field(0.01, gt=0, lt=0.5)  # family-wise level of the drift tests (Bonferroni)
    min_effect: float = Field(0.1, ge=0, le=1)      # and the KS statistic / total variation must exceed this
    min_feedback: int = Field(30, ge=1)             # labelled predictions needed before live accuracy counts
    min_live_accuracy: float = Field(0.0, ge=0, le=1)  # 0 turns the live-accuracy check off
    min_live_sensitivity: dict[str, float] = Field(default_factory=dict)
    retrain_on: list[RetrainReason] = Field(
        default_factory=lambda: ["ood_rate", "image_drift", "prediction_drift", "live_accuracy"])
    canary: CanaryConfig = Field(default_factory=CanaryConfig)

    @field_validator("min_live_sensitivity")
    @classmethod
    def _sens(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not 0 <= x <= 1:
                raise ValueError(f"min_live_sensitivity.{k} must be within 0..1, got {x}")
        return v


class ScaleConfig(Section):
    """How the data plane scales out (validate, preprocess): partitions of the manifest, run at most
    ``parallelism`` at a time (KFP: one task per partition under ``dsl.ParallelFor``; ``dvc repro`` and
    ``cxr``: a local process pool), merged by a final step; and the size of each shard file."""

    partitions: int = Field(1, ge=1, le=4096)
    # partitions at once: the ParallelFor's parallelism (fixed when the pipeline is compiled) and the local pool
    parallelism: int = Field(2, ge=1, le=1024)
    # target size of one shard file (uint8 images of train.image_size²; the images per shard follow from it)
    shard_mb: float = Field(64.0, gt=0, le=4096)


class ReviewConfig(Section):
    """``cxr review-labels`` (off by default): out-of-fold class probabilities over the training and validation
    splits (``folds`` patient-grouped folds, a short training each), then confident learning (cleanlab's
    ``find_label_issues``), ranked by self-confidence. A small CNN from scratch by default; ``backbone`` and
    ``weights`` take the recipe's (e.g. resnet34 / imagenet: the head trains, the backbone stays frozen)."""

    enabled: bool = False
    folds: int = Field(3, ge=2, le=20)
    backbone: Backbone = "small_cnn"
    weights: str = "none"
    image_size: int = Field(64, ge=32, le=1024)  # the shards' images are resized down to this (never up)
    epochs: int = Field(30, ge=1, le=500)
    lr: float = Field(0.005, gt=0, lt=1)
    batch_size: int = Field(32, ge=1, le=4096)
    # the default augmentation in the fold trainings: about 3x slower at 32 px on a CPU, and on the demo it found
    # fewer planted flips (top-k recall 0.69 against 0.75-0.81 without; 20 epochs instead of 30 at 64 px: out-of-fold
    # agreement 0.51 against 0.65, BENCHMARKS.md "Label review")
    augment: bool = False
    gallery: int = Field(24, ge=0, le=1000)  # top suspects shown with their Grad-CAM in gallery.html
    seed: int = 0

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        return TrainConfig._weights(v)

    @model_validator(mode="after")
    def _fits(self) -> ReviewConfig:
        if _backbones.info(self.backbone).imagenet == "none" and self.weights == "imagenet":
            raise ValueError(f"backbone {self.backbone} has no ImageNet weights: set review.weights to 'none'")
        return self


class Params(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross(self) -> Params:
        for key, named in (("gate.min_sensitivity", self.gate.min_sensitivity),
                           ("gate.min_specificity", self.gate.min_specificity),
                           ("evaluate.target_sensitivity", self.evaluate.target_sensitivity)):
            unknown = set(named) - set(self.data.classes)
            if unknown:
                raise ValueError(f"{key} names classes not in data.classes {self.data.classes}: {sorted(unknown)}")
        served = set(self.evaluate.target_sensitivity)
        for key, named in (("gate.min_sensitivity", self.gate.min_sensitivity),
                           ("gate.min_specificity", self.gate.min_specificity)):
            if set(named) - served:
                raise ValueError(f"{key} names {sorted(set(named) - served)}, which have no operating point: add "
                                 "them to evaluate.target_sensitivity (the gate checks the decision that is served)")
        unknown_ext = set(self.gate.external) - {e.name for e in self.evaluate.external}
        if unknown_ext:
            raise ValueError(f"gate.external names sets not in evaluate.external: {sorted(unknown_ext)}")
        unused = set(self.gate.external) - {e.name for e in applicable_external(self)}
        if unused:
            raise ValueError(f"gate.external names synthetic (demo) sets that are not used with data.source "
                             f"{self.data.source!r}: {sorted(unused)}; set with_real_data: true on them to use them")
        bad = {k for k in self.gate.non_inferiority_margin if "." in k and k.split(".", 1)[1] not in self.data.classes}
        if bad:
            raise ValueError(f"gate.non_inferiority_margin names classes not in data.classes: {sorted(bad)}")
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data (the form logged to MLflow)."""
        return self.model_dump(mode="json", by_alias=True)[name]


# the params.yaml sections, in file order (``validate`` is ``Params.validate_`` in Python): derived from the
# schema, so a new section is one field of Params
SECTIONS: tuple[str, ...] = tuple(f.alias or name for name, f in Params.model_fields.items())
def applicable_external(params) -> list[ExternalSet]:
    """The external sets that apply to this data: a synthetic (``source: demo``) set says nothing about a model of
    real films, so it is used with ``data.source: demo`` only, unless it sets ``with_real_data``."""
    return [e for e in params.evaluate.external
            if e.source != "demo" or params.data.source == "demo" or e.with_real_data]


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names (aliases) of the sub-model that holds ``loc[-1]``, for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        ann = field.annotation
        args = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = args[0] if args else ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return None


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters:"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(Params, loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate a parsed YAML structure; raise :class:`ParamsError` with readable lines."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, source)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate ``params.yaml``; ``overrides`` maps dotted keys to values (tests, KFP)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameters file not found (pass --params PATH)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if overrides:
        raw = apply_overrides(raw or {}, overrides)
    return parse_params(raw, str(path))


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``{"train.image_size": 64}``-style overrides applied."""
    import copy

    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {dotted}: {p} is not a section")
        node[leaf] = value
    return out
