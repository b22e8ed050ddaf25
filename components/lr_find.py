"""LR range test (Smith 2017; seed 2's ``lr_find``): raise the learning rate exponentially over a
few hundred batches of the first phase, record the smoothed loss, suggest a learning rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.core.params_view import under_spec
from components.core.spec import Option, Port, StepSpec

SPEC = StepSpec(
    name="lr-find",
    help="LR range test on the first phase: a loss-vs-LR plot and a suggested learning rate",
    params=("train",),
    inputs=(Port("shards", "data/shards", "preprocessed shards (`cxr preprocess`)"),),
    outputs=(Port("out", "reports/lr_find", "folder for lr_find.png and lr_find.json"),),
    options=(Option("min_lr", float, 1e-7, "lowest learning rate of the sweep"),
             Option("max_lr", float, 1.0, "highest learning rate of the sweep"),
             Option("steps", int, 100, "batches in the sweep")),
    dvc=False,
    kfp=False,
)


def suggest(lrs: np.ndarray, losses: np.ndarray) -> dict:
    """Steepest descent of the smoothed loss (per log-LR), and the minimum-loss LR divided by 10."""
    if len(lrs) < 5:
        return {"steepest": None, "min_loss_div10": None}
    grad = np.gradient(losses, np.log10(lrs))
    cut = int(np.argmin(losses))  # look only before the loss minimum, after the noisy start
    start = min(len(lrs) // 10, max(cut - 1, 0))
    steep = start + int(np.argmin(grad[start: max(cut, start + 1)]))
    return {"steepest": float(lrs[steep]), "min_loss_div10": float(lrs[cut] / 10)}


@under_spec(SPEC)
def run(params, shards: str | Path, out: str | Path, min_lr: float = 1e-7, max_lr: float = 1.0,
        steps: int = 100) -> dict:
    """Sweep the learning rate of phase 1 on the train split of ``shards``; plot and JSON into ``out``."""
    import keras

    from components.core import models
    from components.core import shards as shard_io
    from components.core.fsutil import atomic_path, write_json
    from components.core.plots import plt
    from components.core.training import class_weights

    shards_dir, out_dir = shards, out

    cfg = params.train
    meta = shard_io.read_meta(shards_dir)
    train = shard_io.load_split(shards_dir, "train")
    keras.utils.set_random_seed(cfg.seed)
    model = models.build_model(cfg, len(meta.classes))
    phase = cfg.phases[0]
    models.set_trainable(model, phase.trainable, cfg.freeze_batchnorm)
    model.compile(optimizer=keras.optimizers.Adam(min_lr, amsgrad=phase.amsgrad),
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

    ds = shard_io.dataset(train, cfg.batch_size, training=True, augment=cfg.augment, seed=cfg.seed).repeat()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[Sweep()],
              class_weight=class_weights(train.y, len(meta.classes), cfg.class_weight))
    lrs, smooth = np.array(record["lr"]), np.array(record["smooth"])
    result = {"phase": 1, "trainable": phase.trainable, "steps": len(lrs), "min_lr": min_lr, "max_lr": max_lr,
              "suggested_lr": suggest(lrs, smooth)}
    with atomic_path(out_dir, directory=True) as tmp:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(lrs, smooth)
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="LR range test")
        for key, colour in (("steepest", "r"), ("min_loss_div10", "g")):
            s = result["suggested_lr"][key]
            if s:
                ax.axvline(s, color=colour, ls="--", label=f"{key}: {s:.1e}")
        ax.legend()
        fig.savefig(tmp / "lr_find.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        write_json(tmp / "lr_find.json", {**result, "curve": record})
    return result
