"""Discriminative learning rates (fastai's ``slice(low, high)``): ``train.phases[].lr_mult``, ``lr_groups``,
``lr_spread``, in one place.

1. :func:`layer_groups` cuts the model into groups: the backbone's layers with weights, in graph order, into
   ``lr_groups - 1`` parts (at fastai's cut when the backbone table names one and there are 3 groups), then the
   head.
2. :func:`group_multipliers` gives each group its factor of the phase's rate (``even``: geometric from
   ``1 / lr_mult`` to 1, fastai's ``even_mults``; ``flat``: every body group at ``1 / lr_mult``).
3. :func:`lr_multipliers` maps every trainable variable to its group's factor, and :func:`optimizer_class`'s Adam
   multiplies each variable's rate by it inside the update (Adam is invariant to gradient scale, so scaling the
   gradients would not do it), with decoupled weight decay on kernels.

:func:`components.core.model.training.compile_for_phase` puts them together; the params schema's training warnings
(:func:`components.core.contract.params.train.train_warnings`) compute the highest backbone rate with the same
formula (a test checks they agree).
"""

from __future__ import annotations

import numpy as np

from components.core.contract import backbones
from components.core.model.models import backbone_layers


def layer_groups(model, n_groups: int, backbone: str | None = None) -> list[list]:
    """fastai's layer groups for discriminative learning rates: the backbone's layers that hold weights, in
    graph order, cut into ``n_groups - 1`` contiguous parts, then the head.

    With 3 groups (fastai's count) and a backbone whose table row names fastai's cut (``split``: ResNets cut
    before ``layer3``/``conv4``, DenseNet before ``transition2``), the body is cut there; otherwise into parts
    of about equal length. ``backbone`` defaults to the model's name (``cxr_<backbone>``). The groups are fixed
    by the architecture, not by what a phase unfreezes: with ``last:N`` the unfrozen layers fall into the
    later groups.
    """
    body = [layer for layer in backbone_layers(model) if layer.weights]
    head = [layer for layer in model.layers if layer.name.startswith("head_") and layer.weights]
    name = backbone or model.name.removeprefix("cxr_")
    split = backbones.BY_NAME[name].split if name in backbones.BY_NAME else None
    names = [layer.name for layer in body]
    if n_groups == 3 and split in names:
        cut = names.index(split)
        return [body[:cut], body[cut:], head]
    parts = max(1, min(n_groups - 1, len(body)))
    bounds = [round(i * len(body) / parts) for i in range(parts + 1)]
    return [body[bounds[i]:bounds[i + 1]] for i in range(parts)] + [head]


def group_multipliers(n_groups: int, lr_mult: float, spread: str = "even") -> list[float]:
    """``even``: fastai's ``slice(lr / lr_mult, lr)`` (``even_mults``): factors spaced geometrically, earliest
    group first, head = 1. ``flat``: fastai's ``slice(lr)``: every group but the head at ``1 / lr_mult``."""
    if n_groups <= 1:
        return [1.0]
    if spread == "flat":
        return [1.0 / lr_mult] * (n_groups - 1) + [1.0]
    return [float(lr_mult ** (-(n_groups - 1 - g) / (n_groups - 1))) for g in range(n_groups)]


def lr_multipliers(model, lr_mult: float, n_groups: int, spread: str = "even") -> tuple[dict[str, float], list[dict]]:
    """Per trainable variable path, its group's factor; and a summary of the groups (for logs and MLflow)."""
    groups = layer_groups(model, n_groups)
    factors = group_multipliers(len(groups), lr_mult, spread)
    out: dict[str, float] = {}
    summary = []
    for g, (layers, f) in enumerate(zip(groups, factors, strict=True)):
        trainable = [v for layer in layers for v in layer.trainable_weights]
        out.update({v.path: f for v in trainable})
        summary.append({"group": g + 1, "factor": f, "first": layers[0].name if layers else None,
                        "last": layers[-1].name if layers else None,
                        "trainable_weights": int(sum(int(np.prod(v.shape)) for v in trainable))})
    return out, summary


_CUSTOM: dict[str, type] = {}


def custom_objects() -> dict[str, type]:
    """The registered optimizer class (defined on first use: Keras loads lazily)."""
    if not _CUSTOM:
        _CUSTOM["DiscriminativeAdam"] = _define()
    return dict(_CUSTOM)


def optimizer_class() -> type:
    """Adam with a learning-rate factor per variable and decoupled weight decay (``DiscriminativeAdam``)."""
    return custom_objects()["DiscriminativeAdam"]


def _define() -> type:
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="cxr")
    class DiscriminativeAdam(keras.optimizers.Adam):
        """Adam whose learning rate is multiplied per variable (``lr_multipliers``: variable path → factor),
        with decoupled weight decay (``decoupled_decay``, AdamW-style) on kernels, scaled by the same rate."""

        def __init__(self, lr_multipliers: dict[str, float] | None = None, decoupled_decay: float = 0.0,
                     **kwargs):
            super().__init__(**kwargs)
            self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
            self.decoupled_decay = float(decoupled_decay)
            self._mults: list[float] = []
            self._decays: list[bool] = []

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._mults = [self.lr_multipliers.get(v.path, 1.0) for v in var_list]
            self._decays = [len(v.shape) >= 2 for v in var_list]  # kernels: not biases, BatchNorm or scales

        def update_step(self, gradient, variable, learning_rate):
            i = self._get_variable_index(variable)
            lr = ops.cast(learning_rate, variable.dtype) * self._mults[i]
            if self.decoupled_decay and self._decays[i]:
                variable.assign(variable - variable * ops.cast(self.decoupled_decay, variable.dtype) * lr)
            super().update_step(gradient, variable, lr)

        def get_config(self):
            return {**super().get_config(), "lr_multipliers": self.lr_multipliers,
                    "decoupled_decay": self.decoupled_decay}

    return DiscriminativeAdam
