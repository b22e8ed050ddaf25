"""The backbone table: every fact about a backbone in one row, read by the params schema, the model builder,
the layer groups of discriminative learning rates, the training warnings and the GPU image's baked weights.

Adding a backbone is one row here (and a builder in :mod:`components.core.model.models` when Keras has none) plus
its test in ``tests/components/core/model/test_models.py``, which runs every row. No TensorFlow import: the params
schema reads this table.

Columns:

* ``preprocessing``: the ``preprocess_input`` the model applies inside its graph (``caffe``: BGR mean
  subtraction; ``torch``: ImageNet mean/std on 0..1; ``tf``: -1..1; ``inside``: the Keras model rescales
  itself; ``unit``: 0..1).
* ``min_size``: the smallest input side it accepts (``include_top=False``).
* ``batchnorm``: whether it has BatchNorm layers (training warnings, ``freeze_batchnorm``).
* ``keras_app``: its ``keras.applications`` constructor, or ``None`` when it is built here
  (``resnet34``, ``small_cnn``).
* ``imagenet``: where ImageNet weights come from: ``keras`` (Keras downloads them), ``torchvision``
  (convert torchvision's with ``cxr convert-weights``: Keras has none), ``none``.
* ``bake``: the GPU image bakes its ImageNet weights (``python -m components.core.contract.backbones --bake``).
* ``split``: the first layer of the second layer group at fastai's cut (``_resnet_split``: stem, layer1,
  layer2 | layer3, layer4 | head; ``_densenet_split``: up to denseblock2 | transition2 onwards | head), used
  when a phase asks for 3 layer groups; ``None``: the body is cut into groups of about equal length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Preprocessing = Literal["caffe", "torch", "tf", "inside", "unit"]


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    preprocessing: Preprocessing
    min_size: int
    batchnorm: bool
    keras_app: str | None
    imagenet: Literal["keras", "torchvision", "none"]
    bake: bool
    split: str | None = None


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights (``$KERAS_HOME/models``), and where ``imagenet`` looks for them."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


TABLE: tuple[BackboneInfo, ...] = (
    BackboneInfo("vgg16", "caffe", 32, False, "VGG16", "keras", True),
    BackboneInfo("resnet34", "torch", 32, True, None, "torchvision", False, split="layer3_0_conv1"),
    BackboneInfo("resnet50", "caffe", 32, True, "ResNet50", "keras", True, split="conv4_block1_1_conv"),
    BackboneInfo("resnet50v2", "tf", 32, True, "ResNet50V2", "keras", False, split="conv4_block1_preact_bn"),
    BackboneInfo("densenet121", "torch", 32, True, "DenseNet121", "keras", True, split="pool3_bn"),
    BackboneInfo("efficientnetb0", "inside", 32, True, "EfficientNetB0", "keras", True),
    BackboneInfo("mobilenetv3small", "inside", 32, True, "MobileNetV3Small", "keras", True),
    BackboneInfo("small_cnn", "unit", 32, True, None, "none", False),
)
BY_NAME: dict[str, BackboneInfo] = {b.name: b for b in TABLE}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def info(name: str) -> BackboneInfo:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r} (backbones: {', '.join(NAMES)})") from None


def bake(names: list[str] | None = None) -> list[str]:
    """Download the ImageNet weights (``include_top=False``) of the baked backbones into ``KERAS_HOME``."""
    import keras

    done = []
    for b in TABLE:
        if b.bake and (names is None or b.name in names):
            getattr(keras.applications, b.keras_app)(include_top=False, weights="imagenet")
            done.append(b.name)
    return done


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m components.core.contract.backbones",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--bake", action="store_true", help="download the baked backbones' ImageNet weights")
    ap.add_argument("--list", action="store_true", help="print the table")
    a = ap.parse_args()
    if a.bake:
        print("baked:", ", ".join(bake()))
    if a.list or not a.bake:
        for b in TABLE:
            print(b)
