"""Schedules, discriminative learning rates, the LR range test, BatchNorm refresh, collapse: measured, not assumed."""

import gc
import itertools
import math
import weakref

import keras
import numpy as np
import pytest

from components.core.contract.params.train import Phase, TrainConfig
from components.core.model import models, training
from components.core.stats import metrics


def fastai_one_cycle(pos: float, lr: float, pct: float, div: float, div_final: float) -> float:
    """fastai's combined_cos(pct, lr/div, lr, lr/div_final), written as fastai writes it (SchedCos)."""
    def sched_cos(start, end, p):
        return start + (1 + math.cos(math.pi * (1 - p))) * (end - start) / 2

    if pos < pct:
        return sched_cos(lr / div, lr, pos / pct)
    return sched_cos(lr, lr / div_final, (pos - pct) / (1 - pct))


def test_one_cycle_matches_fastais_formula_in_the_graph_and_in_python():
    sched = training.custom_objects()["PhaseSchedule"]("one_cycle", 2e-3, 200, 0.25, 25.0, 1e5)
    for step in (0, 1, 25, 49, 50, 51, 120, 199, 200):
        want = fastai_one_cycle(step / 200, 2e-3, 0.25, 25.0, 1e5)
        assert float(sched(step)) == pytest.approx(want, rel=1e-5, abs=1e-10)  # float32 in the graph
        assert training.schedule_value("one_cycle", step, 200, 2e-3, 0.25, 25.0, 1e5) == pytest.approx(want, rel=1e-9)
    assert float(sched(0)) == pytest.approx(2e-3 / 25) and float(sched(50)) == pytest.approx(2e-3)
    assert float(sched(500)) == pytest.approx(2e-3 / 1e5)  # past the end: stays at the end


def test_cosine_warms_up_linearly_then_anneals():
    sched = training.custom_objects()["PhaseSchedule"]("cosine", 1e-2, 100, 0.1, 10.0, 1e4)
    assert float(sched(0)) == pytest.approx(1e-3) and float(sched(5)) == pytest.approx(1e-3 + 0.5 * 9e-3)
    assert float(sched(10)) == pytest.approx(1e-2) and float(sched(55)) == pytest.approx((1e-2 + 1e-6) / 2, rel=1e-4)
    values = [float(sched(s)) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # monotone after the warm-up


def tiny_model(**kw):
    keras.utils.set_random_seed(0)
    return models.build_model(TrainConfig(backbone="small_cnn", weights="none", image_size=32,
                                          head={"dense_units": 16, "dropout": 0.0}, **kw), 3)


def test_discriminative_rates_move_early_layers_less_by_the_configured_factor():
    """One Adam step moves each weight by about its learning rate: measure it per layer group."""
    model = tiny_model()
    models.set_trainable(model, "all", freeze_batchnorm=False)
    phase = Phase(epochs=1, trainable="all", lr=[1e-5, 1e-3], lr_groups=3)
    info = training.compile_for_phase(model, phase, steps_per_epoch=1)
    assert [g["factor"] for g in info["groups"]] == pytest.approx([0.01, 0.1, 1.0])
    kernels = {name: model.get_layer(name).kernel for name in ("cnn1_conv", "cnn2_conv", "cnn3_conv", "cnn4_conv",
                                                                 "head_dense", "head_logits")}
    before = {k: v.numpy().copy() for k, v in kernels.items()}
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.integers(0, 256, (16, 32, 32, 1), dtype=np.uint8), rng.integers(0, 3, 16))
    step = {k: float(np.median(np.abs(v.numpy() - before[k]))) for k, v in kernels.items()}
    # groups: [cnn1, cnn2] at 1e-5, [cnn3, cnn4] at 1e-4, head at 1e-3
    assert step["cnn1_conv"] == pytest.approx(1e-5, rel=0.05) and step["cnn2_conv"] == pytest.approx(1e-5, rel=0.05)
    assert step["cnn3_conv"] == pytest.approx(1e-4, rel=0.05) and step["cnn4_conv"] == pytest.approx(1e-4, rel=0.05)
    assert step["head_dense"] == pytest.approx(1e-3, rel=0.05)
    assert step["cnn1_conv"] / step["head_dense"] == pytest.approx(0.01, rel=0.1)


def test_a_checkpoint_restores_optimizer_schedule_and_multipliers(tmp_path):
    """What resume relies on: the .keras checkpoint with safe_mode=True brings back the same optimizer state."""
    model = tiny_model()
    models.set_trainable(model, "all", freeze_batchnorm=False)
    phase = Phase(epochs=2, trainable="all", lr=[1e-4, 1e-2], schedule="one_cycle", weight_decay=0.01)
    training.compile_for_phase(model, phase, steps_per_epoch=5)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (8, 32, 32, 1), dtype=np.uint8), rng.integers(0, 3, 8)
    for _ in range(3):
        model.train_on_batch(x, y)
    model.save(tmp_path / "ckpt.keras")
    loaded = keras.models.load_model(tmp_path / "ckpt.keras", safe_mode=True,
                                     custom_objects=training.custom_objects())
    opt = loaded.optimizer
    assert type(opt).__name__ == "DiscriminativeAdam" and int(opt.iterations) == 3
    assert opt.lr_multipliers == model.optimizer.lr_multipliers and opt.decoupled_decay == 0.01
    assert float(opt.learning_rate) == pytest.approx(training.schedule_value("one_cycle", 3, 10, 1e-2, 0.25, 25, 1e5))
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    # the model that is saved for serving is uncompiled: no optimizer, nothing custom inside
    import json
    import zipfile

    models.inference_model(loaded).save(tmp_path / "final.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "final.keras").read("config.json"))
    assert not config.get("compile_config") and "cxr>" not in json.dumps(config)
    models.load_model(tmp_path / "final.keras")  # safe_mode=True, no custom objects


def test_lr_range_test_restores_the_weights_and_picks_inside_its_range():
    import tensorflow as tf

    model = tiny_model()
    models.set_trainable(model, "all", freeze_batchnorm=False)
    before = [w.numpy().copy() for w in model.weights]
    rng = np.random.default_rng(2)
    ds = tf.data.Dataset.from_tensor_slices((rng.integers(0, 256, (64, 32, 32, 1), dtype=np.uint8),
                                             rng.integers(0, 3, 64))).batch(16)
    result = training.lr_range_test(model, ds, min_lr=1e-5, max_lr=1.0, steps=20)
    for a, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)
    lrs = result["curve"]["lr"]
    assert lrs[0] == pytest.approx(1e-5) and len(lrs) == result["steps"] >= 5
    for rule in ("min_loss_div10", "steepest"):
        assert min(lrs) <= training.pick_lr(result, rule) <= max(lrs)


def test_refresh_batchnorm_sets_the_average_of_batch_statistics():
    inp = keras.Input((4,))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inp, bn(inp))
    x = np.random.default_rng(3).normal(5.0, 2.0, (64, 4)).astype("float32")
    assert training.refresh_batchnorm(model, x, batch_size=16) == 4
    order = np.random.default_rng(0).permutation(64)  # the refresh's seeded random batches
    batches = np.stack([x[np.sort(order[k * 16:(k + 1) * 16])] for k in range(4)])
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(axis=1).mean(axis=0), rtol=1e-4)
    assert bn.momentum == 0.99  # restored
    bn.trainable = False  # frozen BatchNorm is left alone
    assert training.refresh_batchnorm(model, x, batch_size=16) == 0


def test_refresh_batchnorm_traces_once_per_model_and_set_of_training_layers():
    # it runs before every validation pass: one trace for the whole training, not one per epoch
    inp = keras.Input((4,))
    bn1, bn2 = keras.layers.BatchNormalization(), keras.layers.BatchNormalization()
    model = keras.Model(inp, bn2(keras.layers.Dense(4)(bn1(inp))))
    x = np.random.default_rng(3).normal(5.0, 2.0, (50, 4)).astype("float32")  # batches of 16, 16, 16 and 2
    for _ in range(3):
        assert training.refresh_batchnorm(model, x, batch_size=16) == 4
    forward = training.training_forward(model, [bn1, bn2], x)
    assert forward.experimental_get_tracing_count() == 1
    # the next phase freezes bn2: the trace bakes in which layers train, so it is traced again (once), and bn2's
    # statistics are left alone
    bn2.trainable = False
    before = bn2.moving_mean.numpy().copy()
    for _ in range(2):
        training.refresh_batchnorm(model, x, batch_size=16)
    again = training.training_forward(model, [bn1], x)
    assert again is not forward and again.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(bn2.moving_mean.numpy(), before)
    alive = weakref.ref(model)
    del model, forward, again
    gc.collect()
    assert alive() is None  # the cache does not keep a model alive


def test_refresh_batchnorm_batches_mix_the_classes_of_a_sorted_split():
    """Splits are in class order: batches taken in order would each hold one class and miss the variance
    between classes (here 4 of the total 5)."""
    inp = keras.Input((1,))
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inp, bn(inp))
    x = np.concatenate([np.full((64, 1), -2.0), np.full((64, 1), 2.0)]).astype("float32")
    x += np.random.default_rng(1).normal(0.0, 1.0, x.shape).astype("float32")
    training.refresh_batchnorm(model, x, batch_size=16)
    assert float(bn.moving_variance.numpy()[0]) > 0.8 * float(x.var())  # in-order batches: ~1 of ~5


def test_a_constant_predictor_is_caught():
    y = np.arange(24) % 3
    assert "constant predictor" in metrics.collapse(y, np.full(24, 2), ["A", "B", "C"])
    assert metrics.collapse(y, np.where(y == 0, 1, 2), ["A", "B", "C"]) is None
    assert metrics.collapse(np.ones(24, int), np.ones(24, int), ["A", "B"]) is None  # one class: nothing to tell
    # 6 images all called one class: an untrained model does that by chance, so it is not evidence
    assert metrics.collapse(y[:6], np.full(6, 2), ["A", "B", "C"]) is None


def test_valley_is_fastais_longest_descent():
    """fastai's valley on a curve flat (slightly rising) for 20 steps, falling for 40, rising after. fastai drops
    the first tenth and the last 5 points: trimmed index 0 = step 10. The longest decreasing run is one point of
    the flat part and the 40 falling ones: 41 long, ending at trimmed 49, so fastai's start is 49 - 41 = 8;
    s = (49 - 8) / 3 = 13.7 and the suggestion is 8 + int(s) + int(s / 2) = 27 trimmed, step 37."""
    lrs = np.logspace(-7, 1, 100)
    losses = np.concatenate([np.full(20, 2.0) + np.linspace(0.005, 0.01, 20), np.linspace(2.0, 0.5, 40),
                             np.linspace(0.6, 5.0, 40)])
    assert training.valley(lrs, losses) == pytest.approx(lrs[37])
    assert training.suggest(lrs, losses)["valley"] == pytest.approx(lrs[37])


def test_phase_adam_settings_reach_the_optimizer():
    from components.core.contract.params.train import Phase

    model = tiny_model()
    models.set_trainable(model, "all", freeze_batchnorm=False)
    training.compile_for_phase(model, Phase(epochs=1, lr=1e-3, beta_2=0.99, epsilon=1e-5), steps_per_epoch=2)
    assert model.optimizer.beta_2 == 0.99 and model.optimizer.epsilon == 1e-5
    info = training.compile_for_phase(model, Phase(epochs=1, lr=1e-3, lr_mult=10, lr_spread="flat", beta_2=0.99),
                                      steps_per_epoch=2)
    assert model.optimizer.beta_2 == 0.99 and [g["factor"] for g in info["groups"]] == [0.1, 0.1, 1.0]
