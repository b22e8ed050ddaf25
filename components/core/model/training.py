"""Training building blocks shared by train and lr-find: class weights, devices, optimizers, learning-rate
schedules, discriminative learning rates, the LR range test, BatchNorm statistics, calibration, collapse.

* **Schedules** (``phases[].schedule``): ``constant``, ``one_cycle`` (fastai's ``fit_one_cycle``) and
  ``cosine`` (warm-up + cosine annealing), as a Keras ``LearningRateSchedule`` of the optimizer's own
  step counter (:func:`schedule_value` is the formula). The optimizer and its step counter are in the
  per-epoch checkpoint, so a resumed phase continues on the same curve.
* **Discriminative learning rates** (``phases[].lr_mult``, ``lr_groups``; fastai's ``slice(low, high)``):
  :mod:`components.core.model.discriminative` (layer groups, factors, the optimizer); :func:`compile_for_phase`
  uses it. The schedule and the optimizer are registered Keras objects (:func:`custom_objects`): checkpoints
  restore them with ``safe_mode=True``; the saved model itself is never compiled
  (:func:`components.core.model.models.inference_model`), so nothing custom ends up in it.
* **LR range test** (Smith 2017; fastai's ``lr_find``): :func:`lr_range_test`, :func:`suggest`,
  :func:`plot_lr_range`; ``lr: auto`` runs it before the phase.
* **BatchNorm statistics** (:func:`refresh_batchnorm`): with few steps per epoch the moving averages of
  trainable BatchNorm layers lag far behind weights that move fast, and validation sees a different network
  than training (the default collapsed to a constant predictor on 200 real images). Before every
  validation the statistics are re-estimated on the training images ("precise BN", Wu & Johnson 2021).
"""

from __future__ import annotations

import logging
import math
import weakref

import numpy as np

from components.core.model import discriminative

log = logging.getLogger(__name__)


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """``balanced``: n / (k · count_c), scikit-learn's ``compute_class_weight``; absent classes get 0."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y) * len(present) / n_classes
    out = {i: 0.0 for i in range(n_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return out


def configure_device(mode: str, worker=None):
    """MirroredStrategy and mixed_float16 when GPUs are present (``train.mixed_precision: auto``).

    ``worker`` (:class:`components.core.model.distributed.Worker`) with several workers: MultiWorkerMirroredStrategy
    (which mirrors over this worker's GPUs too); create it before any other TensorFlow op runs."""
    import keras
    import tensorflow as tf

    from components.core.model import distributed

    multi = worker is not None and worker.distributed
    strategy = distributed.strategy(worker) if multi else None
    gpus = tf.config.list_physical_devices("GPU")
    use_mp = mode == "on" or (mode == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    if strategy is None:
        strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    device = {"gpus": len(gpus), "mixed_precision": use_mp, "replicas": strategy.num_replicas_in_sync}
    if multi:
        device.update({"workers": worker.count, "worker": worker.index})
    log.info("device: %s", device)
    return strategy, device


# ---------------------------------------------------------------- schedules
def schedule_value(kind: str, step: float, total_steps: int, lr: float, warmup: float = 0.0, div: float = 25.0,
                   div_final: float = 1e5) -> float:
    """The learning rate at optimizer ``step`` (0-based) of a phase of ``total_steps``.

    one_cycle: cosine from ``lr/div`` up to ``lr`` over the first ``warmup`` fraction, then cosine down to
    ``lr/div_final`` (fastai's ``combined_cos``); cosine: linear from ``lr/div`` up to ``lr``, then the
    same cosine down; constant: ``lr``. Steps past the end stay at the end value.
    """
    if kind == "constant":
        return lr
    total = max(1, int(total_steps))
    w = warmup * total
    lo, end = lr / div, lr / div_final
    if step < w:
        p = min(max(step / w, 0.0), 1.0)
        return lo + (lr - lo) * ((1 - math.cos(math.pi * p)) / 2 if kind == "one_cycle" else p)
    p = min(max((step - w) / max(total - w, 1e-9), 0.0), 1.0)
    return end + (lr - end) * (1 + math.cos(math.pi * p)) / 2


_CUSTOM: dict[str, type] = {}


def custom_objects() -> dict[str, type]:
    """The registered Keras classes checkpoints may hold (defined on first use: Keras loads lazily)."""
    if not _CUSTOM:
        _CUSTOM.update(_define_custom())
    return dict(_CUSTOM)


def _define_custom() -> dict[str, type]:
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="cxr")
    class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """:func:`schedule_value` as a graph function of the optimizer's step counter."""

        def __init__(self, kind: str, lr: float, total_steps: int, warmup: float = 0.0, div: float = 25.0,
                     div_final: float = 1e5, name: str = "phase_schedule"):
            self.kind, self.lr, self.total_steps = kind, float(lr), int(total_steps)
            self.warmup, self.div, self.div_final, self.name = float(warmup), float(div), float(div_final), name

        def __call__(self, step):
            s = ops.cast(step, "float32")
            total = float(max(1, self.total_steps))
            w = self.warmup * total
            hi, lo, end = self.lr, self.lr / self.div, self.lr / self.div_final
            if self.kind == "constant":
                return ops.convert_to_tensor(hi, "float32")
            p2 = ops.clip((s - w) / max(total - w, 1e-9), 0.0, 1.0)
            down = end + (hi - end) * (1.0 + ops.cos(math.pi * p2)) / 2.0
            if w <= 0:
                return down
            p1 = ops.clip(s / w, 0.0, 1.0)
            up = lo + (hi - lo) * ((1.0 - ops.cos(math.pi * p1)) / 2.0 if self.kind == "one_cycle" else p1)
            return ops.where(s < w, up, down)

        def get_config(self):
            return {"kind": self.kind, "lr": self.lr, "total_steps": self.total_steps, "warmup": self.warmup,
                    "div": self.div, "div_final": self.div_final, "name": self.name}

    return {"PhaseSchedule": PhaseSchedule, **discriminative.custom_objects()}


def compile_for_phase(model, phase, lr: float | None = None, steps_per_epoch: int = 1) -> dict:
    """A fresh optimizer for the phase (Adam with the phase's ``beta_2``, ``epsilon``, ``amsgrad``;
    :class:`DiscriminativeAdam` when the phase sets ``lr_mult`` or ``weight_decay``), its learning-rate schedule,
    sparse categorical cross-entropy, accuracy.

    ``lr`` is the phase's rate (needed when ``phase.lr`` is ``auto``). Returns what was compiled.
    """
    import keras

    rate = float(phase.lr if lr is None else lr)
    if isinstance(phase.lr, str) and lr is None:
        raise ValueError("phase.lr is 'auto': pass the rate the LR range test found")
    total = max(1, phase.epochs * int(steps_per_epoch))
    info: dict = {"lr": rate, "schedule": phase.schedule, "total_steps": total}
    learning_rate: object = rate
    if phase.schedule != "constant":
        cls = custom_objects()["PhaseSchedule"]
        learning_rate = cls(phase.schedule, rate, total, phase.warmup_fraction, phase.div, phase.div_final)
        info.update(warmup=phase.warmup_fraction, start_lr=float(learning_rate(0)), peak_lr=rate,
                    end_lr=rate / phase.div_final)
    adam = {"amsgrad": phase.amsgrad, "beta_2": phase.beta_2, "epsilon": phase.epsilon}
    if phase.lr_mult > 1 or phase.weight_decay > 0:
        mults, groups = discriminative.lr_multipliers(model, phase.lr_mult, phase.lr_groups, phase.lr_spread)
        optimizer = custom_objects()["DiscriminativeAdam"](
            lr_multipliers=mults, decoupled_decay=phase.weight_decay, learning_rate=learning_rate, **adam)
        info.update(lr_mult=phase.lr_mult, lr_spread=phase.lr_spread, weight_decay=phase.weight_decay, groups=groups)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, **adam)
    info.update(beta_2=phase.beta_2, epsilon=phase.epsilon)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return info


# ---------------------------------------------------------------- LR range test
def valley(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """fastai's ``valley`` (its ``lr_find`` default since 2.5): on the curve without its first tenth and last 5
    points, the longest stretch where the loss keeps falling (longest decreasing subsequence); the rate
    ``int(s) + int(s / 2)`` steps into it, ``s`` = a third of its length."""
    n = len(lrs)
    lrs, losses = lrs[n // 10: n - 5], losses[n // 10: n - 5]
    n = len(losses)
    if n < 2:
        return None
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])


def suggest(lrs: np.ndarray, losses: np.ndarray) -> dict:
    """Steepest descent of the smoothed loss (per log-LR), the minimum-loss LR divided by 10 (fastai's
    ``lr_min``), and fastai's ``valley``."""
    if len(lrs) < 5:
        return {"steepest": None, "min_loss_div10": None, "valley": None}
    grad = np.gradient(losses, np.log10(lrs))
    cut = int(np.argmin(losses))  # look only before the loss minimum, after the noisy start
    start = min(len(lrs) // 10, max(cut - 1, 0))
    steep = start + int(np.argmin(grad[start: max(cut, start + 1)]))
    return {"steepest": float(lrs[steep]), "min_loss_div10": float(lrs[cut] / 10),
            "valley": valley(np.asarray(lrs), np.asarray(losses))}


def lr_range_test(model, dataset, *, min_lr: float, max_lr: float, steps: int, class_weight=None,
                  amsgrad: bool = False, beta_2: float = 0.999, epsilon: float = 1e-7) -> dict:
    """Raise the learning rate exponentially from ``min_lr`` to ``max_lr`` over ``steps`` batches of
    ``dataset`` (repeated), recording the loss; stop when it diverges. The model's weights (and BatchNorm
    statistics) are restored afterwards; its optimizer is replaced: compile again before training.
    """
    import keras

    saved = [w.numpy() for w in model.weights]
    model.compile(optimizer=keras.optimizers.Adam(min_lr, amsgrad=amsgrad, beta_2=beta_2, epsilon=epsilon),
                  loss="sparse_categorical_crossentropy")
    factor = (max_lr / min_lr) ** (1 / max(1, steps - 1))
    record: dict[str, list[float]] = {"lr": [], "loss": [], "smooth": []}

    class Sweep(keras.callbacks.Callback):
        avg, best, running = 0.0, np.inf, 0.0

        def on_train_batch_end(self, batch, logs=None):
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            # Keras reports the running mean over the epoch: recover this batch's loss from it.
            loss = float(logs["loss"]) * (batch + 1) - self.running * batch
            self.running = float(logs["loss"])
            self.avg = 0.98 * self.avg + 0.02 * loss
            smooth = self.avg / (1 - 0.98 ** (batch + 1))
            record["lr"].append(lr)
            record["loss"].append(loss)
            record["smooth"].append(smooth)
            self.best = min(self.best, smooth)
            if not np.isfinite(loss) or smooth > 4 * self.best:
                self.model.stop_training = True
            self.model.optimizer.learning_rate.assign(lr * factor)

    try:
        model.fit(dataset.repeat(), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[Sweep()],
                  class_weight=class_weight)
    finally:
        for w, v in zip(model.weights, saved, strict=True):
            w.assign(v)
    lrs, smooth = np.array(record["lr"]), np.array(record["smooth"])
    return {"steps": len(lrs), "min_lr": min_lr, "max_lr": max_lr, "suggested_lr": suggest(lrs, smooth),
            "curve": record}


def pick_lr(result: dict, rule: str) -> float:
    """The rate ``lr: auto`` trains with: the finder's suggestion by ``rule``, kept inside the swept range."""
    lrs = result["curve"]["lr"]
    value = result["suggested_lr"].get(rule)
    if value is None or not lrs:
        raise ValueError(f"the LR range test recorded {len(lrs)} steps: too few to suggest a rate (raise "
                         "train.lr_find.steps, or set the phase's lr)")
    return float(min(max(value, min(lrs)), max(lrs)))


def plot_lr_range(result: dict, path, chosen: float | None = None) -> None:
    """Loss (smoothed) against learning rate on a log axis, with the suggestions (and the rate chosen)."""
    from components.core.stats.plots import plt

    curve = result["curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["lr"], curve["smooth"])
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="LR range test")
    for key, colour in (("steepest", "r"), ("min_loss_div10", "g"), ("valley", "m")):
        s = result["suggested_lr"].get(key)
        if s:
            ax.axvline(s, color=colour, ls="--", label=f"{key}: {s:.1e}")
    if chosen:
        ax.axvline(chosen, color="k", lw=1.5, label=f"chosen: {chosen:.1e}")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------- BatchNorm statistics
def trainable_batchnorm(model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
            and layer.trainable]


def refresh_batchnorm(model, x: np.ndarray, batch_size: int, max_batches: int = 200) -> int:
    """Re-estimate the moving mean/variance of every trainable BatchNorm layer as the average of its
    training-mode batch statistics over up to ``max_batches`` batches of ``x`` (with the current weights).
    The batches are drawn at random (seeded), like training's shuffled batches: ``x`` is in manifest order,
    which is class order, and a batch of one class would miss the variance between classes. Returns the
    number of batches used."""
    layers = trainable_batchnorm(model)
    n = min(len(x), max_batches * batch_size)
    if not layers or n == 0:
        return 0
    order = np.random.default_rng(0).permutation(len(x))[:n]
    momenta = [layer.momentum for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in layers]
    batches = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # moving statistics := this batch's statistics
        forward = training_forward(model, layers, x)
        for start in range(0, n, batch_size):
            forward(np.asarray(x[np.sort(order[start:start + batch_size])]))
            for acc, layer in zip(sums, layers, strict=True):
                acc[0] += layer.moving_mean.numpy()
                acc[1] += layer.moving_variance.numpy()
            batches += 1
        for (mean, var), layer in zip(sums, layers, strict=True):
            layer.moving_mean.assign(mean / batches)
            layer.moving_variance.assign(var / batches)
    finally:
        for layer, m in zip(layers, momenta, strict=True):
            layer.momentum = m
    return batches


# per model: (what its training-mode forward pass was traced for, the tf.function); weak, so a model still dies
_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def training_forward(model, layers: list, x: np.ndarray):
    """``model(batch, training=True)`` as a tf.function built once per model and traced once (any batch size)
    for the set of BatchNorm layers that train, which the trace bakes in (a frozen layer normalizes with its
    moving statistics): the refresh runs before every validation pass and would otherwise trace the whole network
    every epoch. The momentum, also baked in, is always 0 while the refresh runs."""
    import tensorflow as tf

    key = (tuple(layer.name for layer in layers), x.shape[1:], x.dtype.str)
    cached = _FORWARD.get(model)
    if cached is None or cached[0] != key:
        ref = weakref.ref(model)  # the function must not keep its own model (the dictionary's key) alive
        spec = tf.TensorSpec((None, *x.shape[1:]), x.dtype)
        cached = _FORWARD[model] = (key, tf.function(lambda b: ref()(b, training=True), input_signature=[spec]))
    return cached[1]


def batchnorm_refresher(x: np.ndarray, batch_size: int, max_batches: int = 200):
    """A callback that refreshes the BatchNorm statistics before every validation pass of ``fit``."""
    import keras

    class RefreshBatchNorm(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            refresh_batchnorm(self.model, x, batch_size, max_batches)

    return RefreshBatchNorm()


# ---------------------------------------------------------------- calibration and collapse
def calibrate(model, x_val: np.ndarray, y_val: np.ndarray, bins: int = 10) -> dict:
    """Fit the softmax temperature on the validation split (Guo et al. 2017); ECE before and after."""
    from components.core.data.shards import predict
    from components.core.model import models
    from components.core.stats import clinical
    from components.core.stats.metrics import expected_calibration_error

    logits = np.asarray(predict(models.logits_model(model), x_val), dtype=np.float64)  # block-wise: any split size
    t = clinical.fit_temperature(logits, y_val)
    before, after = clinical.calibrated(logits, 1.0), clinical.calibrated(logits, t)
    result = {"temperature": round(t, 6), "fitted_on": "val",
              "val_nll_before": round(clinical.nll(logits, y_val, 1.0), 5),
              "val_nll_after": round(clinical.nll(logits, y_val, t), 5),
              "val_ece_before": round(expected_calibration_error(y_val, before, bins), 5),
              "val_ece_after": round(expected_calibration_error(y_val, after, bins), 5)}
    log.info("calibration: T=%.3f, val ECE %.4f -> %.4f", t, result["val_ece_before"], result["val_ece_after"])
    return result
