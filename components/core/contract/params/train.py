"""``train``: the backbone, its phases, head, augmentation and the training loop's settings."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, field_validator, model_validator

from components.core.contract import backbones as _backbones
from components.core.contract.params.base import Section, require_order

Backbone = Literal[_backbones.NAMES]  # the backbone table (components/core/contract/backbones.py)


BACKBONES: tuple[str, ...] = get_args(Backbone)


# Smallest input side each backbone accepts with include_top=False (keras.applications checks >= 32).
MIN_IMAGE_SIZE: dict[str, int] = {b.name: b.min_size for b in _backbones.TABLE}


_TRAINABLE = re.compile(r"^(head|all|last:(\d+))$")


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

    # lr may also be written [low, high] (converted by _lr_range before validation): strict.py checks that form
    __raw_forms__: ClassVar[dict[str, Any]] = {"lr": list[float]}

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
    """Training augmentation, one resampling pass per batch (:func:`components.core.data.shards.augment_batch`).
    The defaults are ours; ``zoom_in_only``, ``fill: reflect``, ``lighting: logit`` and ``p_affine``/``p_lighting``
    0.75 are fastai's ``aug_transforms`` (the ``seed2-fastai`` recipes)."""

    rotation: float = Field(0.03, ge=0, le=0.5)  # fraction of a full turn (0.03 ≈ ±11°; fastai's 10° = 0.0278)
    zoom: float = Field(0.1, ge=0, lt=1)
    # true: zoom in only (scale 1 .. 1 + zoom) about a random centre that keeps the view inside the film (fastai's
    # Zoom, max_zoom = 1 + zoom); false: scale 1 - zoom .. 1 + zoom about the centre (zooming out shows the fill)
    zoom_in_only: bool = False
    translate: float = Field(0.05, ge=0, lt=1)
    # what the warp fills outside the film: constant (black) or reflect (fastai's pad_mode='reflection')
    fill: Literal["constant", "reflect"] = "constant"
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    # additive: + U(±brightness)·255, contrast × U(1 ± contrast) about the image mean; logit: fastai's lighting,
    # brightness and contrast = max_lighting: logit(x) + logit(U(0.5(1 ± b))), then × exp(U(±log(1 - c)))
    # (at mid-grey fastai's max_lighting 0.2 moves a pixel by ±0.1·255, half of additive 0.2)
    lighting: Literal["additive", "logit"] = "additive"
    # the chance that an image gets each affine part (rotation, zoom, translation) and the lighting (fastai: 0.75)
    p_affine: float = Field(1.0, ge=0, le=1)
    p_lighting: float = Field(1.0, ge=0, le=1)
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
        require_order(self, "min_lr", "max_lr", strict=True)
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
