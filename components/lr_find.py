"""LR range test (Smith 2017; seed 2's ``lr_find``): raise the learning rate exponentially over a
few hundred batches of the first phase, record the smoothed loss, suggest a learning rate.

The sweep itself is :func:`components.core.model.training.lr_range_test`: ``train`` runs the same code
before a phase whose ``lr`` is ``auto`` (``train.lr_find`` sets its range and which suggestion is used).
"""

from __future__ import annotations

from pathlib import Path

from components.core.contract.params_view import under_spec
from components.core.contract.spec import Option, Port, StepSpec

SPEC = StepSpec(
    name="lr-find",
    help="LR range test on the first phase: a loss-vs-LR plot and a suggested learning rate",
    params=("train",),
    inputs=(Port("shards", "data/shards", "preprocessed shards (`cxr preprocess`)"),),
    outputs=(Port("out", "reports/lr_find", "folder for lr_find.png and lr_find.json"),),
    options=(Option("min_lr", float, None, "lowest learning rate of the sweep (default: train.lr_find.min_lr)"),
             Option("max_lr", float, None, "highest learning rate of the sweep (default: train.lr_find.max_lr)"),
             Option("steps", int, None, "batches in the sweep (default: train.lr_find.steps)")),
    dvc=False,
    kfp=False,
)


@under_spec(SPEC)
def run(params, shards: str | Path, out: str | Path, min_lr: float | None = None, max_lr: float | None = None,
        steps: int | None = None) -> dict:
    """Sweep the learning rate of phase 1 on the train split of ``shards``; plot and JSON into ``out``."""
    import keras

    from components.core.contract.fsutil import atomic_path, write_json
    from components.core.data import shards as shard_io
    from components.core.model import models, training

    cfg = params.train
    f = cfg.lr_find
    min_lr, max_lr, steps = min_lr or f.min_lr, max_lr or f.max_lr, steps or f.steps
    meta = shard_io.read_meta(shards)
    train = shard_io.load_split(shards, "train")
    keras.utils.set_random_seed(cfg.seed)
    model = models.build_model(cfg, len(meta.classes))
    phase = cfg.phases[0]
    models.set_trainable(model, phase.trainable, cfg.freeze_batchnorm, phase.train_bn)
    ds = shard_io.dataset(train, cfg.batch_size, training=True, augment=cfg.augment, seed=cfg.seed)
    result = training.lr_range_test(model, ds, min_lr=min_lr, max_lr=max_lr, steps=steps, amsgrad=phase.amsgrad,
                                    class_weight=training.class_weights(train.y, len(meta.classes), cfg.class_weight))
    chosen = training.pick_lr(result, f.suggestion) if result["steps"] >= 5 else None
    summary = {"phase": 1, "trainable": phase.trainable, **{k: v for k, v in result.items() if k != "curve"},
               "suggestion": f.suggestion, "lr_auto_would_use": chosen}
    with atomic_path(out, directory=True) as tmp:
        training.plot_lr_range(result, tmp / "lr_find.png", chosen=chosen)
        write_json(tmp / "lr_find.json", {**summary, "curve": result["curve"]})
    return summary
