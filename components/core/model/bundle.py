"""A loaded model with what inference needs: its classes, input size and resize (the preprocessing record), its
decision thresholds, the out-of-distribution reference; and inference itself (probabilities, OOD scores,
the thresholded decision) through a graph compiled once. The registry loads it
(:func:`components.core.registry.registry.load`); serving and the gate use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.core.model import models


@dataclass
class ModelBundle:
    """A loaded model with what serving needs to know about it."""

    model: Any
    classes: list[str]
    image_size: int
    resize: str  # preprocess.resize at training: how an image is fitted to the model's square (models.Preprocessing)
    name: str = ""
    version: str = ""
    alias: str = ""
    uri: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    # per-class decision thresholds chosen on the validation split (evaluate.target_sensitivity)
    thresholds: dict[str, float] = field(default_factory=dict)
    model_card: str = ""
    # the training-data reference and OOD threshold (components.core.model.ood.OodReference); None: no OOD score
    ood: Any = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "uri": self.uri,
                "classes": self.classes, "image_size": self.image_size, "resize": self.resize,
                "temperature": models.temperature(self.model), "thresholds": self.thresholds,
                "metrics": self.metrics, "model_card": self.model_card,
                "ood": self.ood.describe() if self.ood is not None else None}

    def infer_ood(self, x):
        """(probabilities, OOD scores or None) for a uint8 batch, from one compiled pass through the model."""
        if self.ood is None:
            return self.infer(x), None
        if not hasattr(self, "_infer_ood"):
            import tensorflow as tf

            from components.core.model.ood import scoring_model

            spec = tf.TensorSpec([None, self.image_size, self.image_size, 1], tf.uint8)
            both = scoring_model(self.model, int(self.ood.means.shape[1]))
            self._infer_ood = tf.function(lambda t: both(t, training=False), input_signature=[spec],
                                          autograph=False)
        probs, feats = self._infer_ood(x)
        return probs.numpy(), self.ood.score(feats.numpy())

    def infer(self, x):
        """Probabilities for a uint8 batch through a graph compiled once (an eager Keras call of a deep
        model costs 10-20x more per image on a CPU)."""
        if not hasattr(self, "_infer"):
            import tensorflow as tf

            spec = tf.TensorSpec([None, self.image_size, self.image_size, 1], tf.uint8)
            model = self.model
            self._infer = tf.function(lambda t: model(t, training=False), input_signature=[spec],
                                      autograph=False)
        return self._infer(x).numpy()

    def decide(self, probs) -> dict[str, bool]:
        """The thresholded decision per class that has an operating point."""
        return {c: bool(probs[self.classes.index(c)] >= t) for c, t in self.thresholds.items() if c in self.classes}
