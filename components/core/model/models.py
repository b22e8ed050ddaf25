"""Model builder: backbone + the backbone's own preprocessing + classification head, in one graph.

The saved model takes ``uint8`` grayscale pixels (``image_size × image_size × 1``), repeats them to
three channels, applies the backbone's ``preprocess_input`` as built-in Keras layers (so
``safe_mode=True`` loading works and serving cannot drift from training), runs the backbone and
the head ``GlobalMaxPooling2D → Dense(512, relu) → Dropout(0.5) → Dense(softmax)`` (``train.head``:
``pooling`` max, avg, or concat = average and max side by side; ``batchnorm`` and ``input_dropout`` give
fastai's ``create_head``: pool → BN → Dropout(p/2) → Dense(relu, no bias) → BN → Dropout(p) → Dense(no bias),
the dense layers He-initialised as fastai's ``apply_init``).

Backbones and their facts (preprocessing, minimum size, BatchNorm, where ImageNet weights come from, fastai's
layer-group cut) are one table, :mod:`components.core.contract.backbones`; ResNet34, which Keras lacks, is built in
:mod:`components.core.model.resnet`.

The graph is flat (backbone layers are layers of the model, not a nested model), so any phase can
unfreeze "the last N backbone layers", discriminative learning rates can cut the backbone into layer
groups (:func:`components.core.model.discriminative.layer_groups`), and Grad-CAM can read the backbone's feature
map. The model that is
saved is never compiled (:func:`inference_model`): no optimizer or other custom object is inside it.
Layer names: ``cxr_*`` for input/preprocessing, ``head_*`` for the head, the rest is backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components.core.contract import backbones
from components.core.contract.errors import CxrError, ParamsError

if TYPE_CHECKING:  # annotations only: the stages that load a model do not depend on the train schema
    from components.core.contract.params.train import TrainConfig

INPUT_NAME = "cxr_pixels"
FEATURES_NAME = "head_pool"  # Grad-CAM reads this layer's input: the backbone's last feature map
LOGITS_NAME = "head_logits"
TEMPERATURE_NAME = "head_temperature"
OUTPUT_NAME = "head_softmax"

# keras.applications preprocess_input, as built-in layers, for a grayscale image repeated to RGB.
_CAFFE_MEAN = [103.939, 116.779, 123.68]  # BGR means (vgg16, resnet50): x - mean, no scaling
_TORCH_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
_TORCH_VAR = [(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2]
PREPROCESSING = {b.name: b.preprocessing for b in backbones.TABLE}


def require_tensorflow() -> None:
    """TensorFlow comes from an extra; say how to get it instead of a bare ImportError."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise CxrError("TensorFlow is not installed: pip install -e '.[cpu]' (or '.[gpu]' on a CUDA machine)") from None


def _preprocess(keras, x, mode: str):
    layers = keras.layers
    if mode == "caffe":
        return layers.Normalization(mean=_CAFFE_MEAN, variance=[1.0, 1.0, 1.0], name="cxr_preprocess")(x)
    if mode == "torch":
        return layers.Normalization(mean=_TORCH_MEAN, variance=_TORCH_VAR, name="cxr_preprocess")(x)
    if mode == "tf":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="cxr_preprocess")(x)
    if mode == "unit":
        return layers.Rescaling(1 / 255.0, name="cxr_preprocess")(x)
    return x  # the backbone rescales 0..255 itself


def _small_cnn(keras, x):
    """A small from-scratch CNN for offline demos and tests (no pretrained weights exist)."""
    layers = keras.layers
    for i, filters in enumerate((16, 32, 64, 96), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"cnn{i}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"cnn{i}_bn")(x)
        x = layers.Activation("relu", name=f"cnn{i}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"cnn{i}_pool")(x) if i < 4 else x
    return x


def _backbone(keras, name: str, x, weights: str | None):
    """The backbone's feature map on ``x``; its layers become layers of the enclosing model."""
    row = backbones.info(name)
    if row.keras_app is None:
        raise ParamsError(f"train.backbone {name!r} is built by build_model, not keras.applications")
    kwargs = {"include_top": False, "weights": weights, "input_tensor": x}
    if name == "mobilenetv3small":
        kwargs["include_preprocessing"] = True
    return getattr(keras.applications, row.keras_app)(**kwargs).output


def _weights_arg(weights: str, backbone: str = "") -> str | None:
    if weights == "none":
        return None
    if weights == "imagenet":
        if backbones.info(backbone).imagenet == "torchvision":
            return str(_torchvision_imagenet(backbone))
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ParamsError(f"train.weights: file {path} not found (use 'imagenet', 'none' or an existing .h5 file)")
    return str(path)


def _torchvision_imagenet(backbone: str) -> Path:
    """The converted torchvision weights ``imagenet`` means for a backbone Keras has none for."""
    from components.core.model import resnet

    path = backbones.keras_cache_dir() / resnet.IMAGENET_FILE
    if not path.is_file():
        raise CxrError(
            f"{backbone} has no Keras ImageNet weights: download torchvision's ({backbone}-b627a593.pth, the "
            f"weights fastai uses) where you can and run `cxr convert-weights --state-dict <file>`, which writes "
            f"{path}; or set train.weights to a converted .weights.h5 file, or to none.")
    return path


def _resnet34(keras, x, weights: str | None):
    """ResNet34's layers on ``x``; ``weights``: a Keras weights file of its body (``cxr convert-weights``)."""
    from components.core.model import resnet

    features = resnet.resnet34(keras, x)
    if weights is None:
        return features
    import warnings

    body = resnet.backbone_model()
    try:
        with warnings.catch_warnings():  # Keras warns per layer before it raises for a file that does not fit
            warnings.simplefilter("ignore", UserWarning)
            body.load_weights(weights)
    except Exception as err:  # wrong file, wrong network: Keras raises ValueError and friends
        raise ParamsError(f"train.weights {weights} does not fit backbone resnet34: {type(err).__name__}: "
                          f"{str(err)[:300]}") from None
    return features, body


def build_model(cfg: TrainConfig, n_classes: int):
    """Build the classifier; errors about weights are :class:`CxrError` with what to do."""
    require_tensorflow()
    import keras

    layers = keras.layers
    size = cfg.image_size
    inputs = keras.Input((size, size, 1), dtype="uint8", name=INPUT_NAME)
    x = layers.Rescaling(1.0, name="cxr_to_float")(inputs)  # uint8 → float, same values
    loaded_body = None
    if cfg.backbone == "small_cnn":
        features = _small_cnn(keras, _preprocess(keras, x, "unit"))
    elif cfg.backbone == "resnet34":
        x = layers.Concatenate(name="cxr_gray_to_rgb")([x, x, x])
        x = _preprocess(keras, x, PREPROCESSING[cfg.backbone])
        built = _resnet34(keras, x, _weights_arg(cfg.weights, cfg.backbone))
        features, loaded_body = built if isinstance(built, tuple) else (built, None)
    else:
        x = layers.Concatenate(name="cxr_gray_to_rgb")([x, x, x])
        x = _preprocess(keras, x, PREPROCESSING[cfg.backbone])
        weights = _weights_arg(cfg.weights, cfg.backbone)
        try:
            features = _backbone(keras, cfg.backbone, x, weights)
        except ValueError as err:
            if weights not in (None, "imagenet"):
                raise ParamsError(
                    f"train.weights {weights} does not fit backbone {cfg.backbone} (include_top=False): {err}"
                ) from None
            raise
        except Exception as err:  # urllib/HTTP errors from the ImageNet download
            if weights == "imagenet":
                raise CxrError(
                    f"could not load ImageNet weights for {cfg.backbone}: {type(err).__name__}: {err}. "
                    f"Keras downloads them once into {backbones.keras_cache_dir()}; offline, copy the file there, set "
                    "train.weights to a local .h5 file, or use train.weights: none."
                ) from None
            raise
    if cfg.head.pooling == "concat":  # fastai's AdaptiveConcatPool2d: average and max side by side
        x = layers.Concatenate(name="head_concat")([layers.GlobalAveragePooling2D(name=FEATURES_NAME)(features),
                                                    layers.GlobalMaxPooling2D(name="head_pool_max")(features)])
    else:
        pool = layers.GlobalMaxPooling2D if cfg.head.pooling == "max" else layers.GlobalAveragePooling2D
        x = pool(name=FEATURES_NAME)(features)
    outputs = _head(keras, x, cfg.head, n_classes)
    model = keras.Model(inputs, outputs, name=f"cxr_{cfg.backbone}")
    if loaded_body is not None:  # the converted weights, layer by layer (the same names)
        for layer in loaded_body.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def _head(keras, x, head, n_classes: int):
    """Dense → Dropout → logits → softmax; with ``head.batchnorm`` fastai's ``LinBnDrop`` twice: BN → Dropout →
    Dense (no bias, He normal), the first dropout ``head.input_dropout``, the second ``head.dropout``."""
    layers = keras.layers
    fastai = head.batchnorm
    dense = {"use_bias": not fastai, "kernel_initializer": "he_normal" if fastai else "glorot_uniform"}
    if fastai:
        # PyTorch's BatchNorm1d: epsilon 1e-5, momentum 0.1 (Keras 0.9)
        x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="head_bn0")(x)
    if head.input_dropout:
        x = layers.Dropout(head.input_dropout, name="head_dropout0")(x)
    x = layers.Dense(head.dense_units, activation="relu", name="head_dense", **dense)(x)
    if fastai:
        x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="head_bn1")(x)
    x = layers.Dropout(head.dropout, name="head_dropout")(x)
    x = layers.Dense(n_classes, name=LOGITS_NAME, dtype="float32", **dense)(x)
    return layers.Activation("softmax", name=OUTPUT_NAME, dtype="float32")(x)


# the head's layers after the pooling, in order (the optional ones only when the head has them)
HEAD_LAYERS = ("head_bn0", "head_dropout0", "head_dense", "head_bn1", "head_dropout", LOGITS_NAME, OUTPUT_NAME)


def head_layers(model) -> list:
    """The head's layers after the pooling that ``model`` has, in order."""
    names = {layer.name for layer in model.layers}
    return [model.get_layer(n) for n in HEAD_LAYERS if n in names]


def head_model(model, feature_dim: int):
    """The head alone, on pooled backbone features; its layers are the model's own (shared weights)."""
    import keras

    x = inp = keras.Input((feature_dim,), name="cxr_features")
    for layer in head_layers(model):
        x = layer(x)
    return keras.Model(inp, x, name="cxr_head")


def pooled_features(model, x, batch_size: int = 64):
    """The pooled backbone features the head reads (the backbone runs in inference mode)."""
    import keras

    from components.core.data.shards import predict

    extractor = keras.Model(model.inputs, head_layers(model)[0].input)
    return predict(extractor, x, batch_size)  # a block at a time: memory does not grow with the split


def logits_model(model):
    """The same graph up to the logits (before temperature and softmax)."""
    import keras

    return keras.Model(model.inputs, model.get_layer(LOGITS_NAME).output)


def with_temperature(model, temperature: float):
    """A model whose softmax reads logits / T: temperature scaling saved in the graph (built-in layers)."""
    import keras

    layers = keras.layers
    x = layers.Rescaling(1.0 / temperature, name=TEMPERATURE_NAME, dtype="float32")(
        model.get_layer(LOGITS_NAME).output)
    out = layers.Activation("softmax", name=OUTPUT_NAME, dtype="float32")(x)
    return keras.Model(model.inputs, out, name=model.name)


def temperature(model) -> float:
    """The model's temperature (1.0 when it has none)."""
    try:
        return 1.0 / float(model.get_layer(TEMPERATURE_NAME).get_config()["scale"])
    except ValueError:
        return 1.0


def weights_digest(model) -> str:
    """The model's content: sha256 over every weight array (in the model's order, with its dtype and shape) and the
    temperature. Two models are the same model exactly when their digests are equal, whatever run, file or
    registry version they came from (a ``.keras`` file's own bytes also hold zip timestamps)."""
    import hashlib

    import keras
    import numpy as np

    h = hashlib.sha256()
    for w in model.weights:
        a = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    h.update(f"temperature={temperature(model)!r}".encode())
    return "sha256:" + h.hexdigest()


def backbone_layers(model) -> list:
    return [layer for layer in model.layers if not layer.name.startswith(("cxr_", "head_"))
            and layer.__class__.__name__ != "InputLayer"]


def set_trainable(model, spec: str, freeze_batchnorm: bool = True, train_bn: bool | None = None) -> dict[str, int]:
    """Apply a phase's ``trainable`` spec: ``head``, ``all`` or ``last:N`` backbone layers.

    BatchNormalization layers among the unfrozen ones stay frozen (inference mode) when
    ``freeze_batchnorm``: fine-tuning them on small batches wrecks their statistics. ``train_bn`` (a
    phase's override) ``True`` trains every BatchNorm layer of the backbone, even in a frozen backbone
    (fastai's ``train_bn``); ``False`` freezes them all. Returns counts for logging and tests.
    """
    backbone = backbone_layers(model)
    if spec == "head":
        chosen: list = []
    elif spec == "all":
        chosen = backbone
    else:
        n = int(spec.split(":", 1)[1])
        if n > len(backbone):
            raise ParamsError(f"trainable 'last:{n}' exceeds the backbone's {len(backbone)} layers")
        chosen = backbone[-n:]
    chosen_ids = {id(layer) for layer in chosen}
    for layer in model.layers:
        is_bn = layer.__class__.__name__ == "BatchNormalization"
        if layer.name.startswith("head_"):
            layer.trainable = True
        elif is_bn and train_bn is not None and not layer.name.startswith("cxr_"):
            layer.trainable = train_bn
        elif id(layer) in chosen_ids:
            layer.trainable = not (is_bn and freeze_batchnorm)
        else:
            layer.trainable = False
    if spec == "all" and not any(layer.trainable for layer in backbone) and backbone:
        raise CxrError("trainable 'all' left no backbone layer trainable")
    return {
        "trainable_layers": sum(1 for layer in model.layers if layer.trainable and layer.weights),
        "trainable_weights": sum(int(w.numpy().size) for w in model.trainable_weights),
        "backbone_layers": len(backbone),
        "batchnorm_training": sum(1 for layer in model.layers
                                  if layer.__class__.__name__ == "BatchNormalization" and layer.trainable),
    }


def inference_model(model):
    """The same graph and weights as a fresh, uncompiled model: what is saved and logged (no optimizer, no
    custom object inside)."""
    import keras

    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs  # a single tensor stays single
    return keras.Model(model.inputs, outputs, name=model.name)


def load_model(path: str | Path):
    """Load a saved ``.keras`` model with ``safe_mode=True`` (no pickled code is executed)."""
    require_tensorflow()
    import keras

    path = Path(path)
    if not path.is_file():
        raise CxrError(f"model file {path} not found (run `cxr train` first, or pass --model)")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as err:
        raise CxrError(f"cannot load model {path}: {type(err).__name__}: {err}") from None


PREPROCESSING_FILE = "preprocessing.json"
# the MLmodel metadata key the same record is logged under (mlflow.keras.log_model(metadata=...))
PREPROCESSING_KEY = "cxr_preprocessing"


@dataclass(frozen=True)
class Preprocessing:
    """What a trained model expects, stored once with the model (``preprocessing.json`` in its folder, the MLmodel
    metadata of its MLflow model): the class names of its outputs and how an image is fitted to its square input
    (``preprocess.resize`` at training; the input size is the model's own input shape)."""

    classes: tuple[str, ...]
    resize: str

    def as_dict(self) -> dict:
        return {"classes": list(self.classes), "resize": self.resize}

    def save(self, folder: Path) -> None:
        from components.core.contract.fsutil import write_json

        write_json(folder / PREPROCESSING_FILE, self.as_dict())

    def mlflow_metadata(self) -> dict:
        """The ``metadata=`` of ``mlflow.keras.log_model``: the same record, in the MLmodel file."""
        return {PREPROCESSING_KEY: self.as_dict()}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> Preprocessing:
        from components.core.data.square import MODES

        if not isinstance(d, dict) or not d.get("classes") or d.get("resize") not in MODES:
            raise CxrError(f"{where}: the preprocessing record {d!r} needs classes and a resize in {MODES}")
        return cls(tuple(str(c) for c in d["classes"]), str(d["resize"]))

    @classmethod
    def load(cls, folder: Path) -> Preprocessing:
        """From a model folder; a folder without the record is refused (no guessing how to fit an image)."""
        import json

        path = folder / PREPROCESSING_FILE
        if not path.is_file():
            raise CxrError(f"{path} not found: the model folder must hold the preprocessing its model was trained "
                           "with (`cxr train` writes it; a model from an older version: train it again)")
        return cls.from_dict(json.loads(path.read_text()), str(path))

    @classmethod
    def from_mlmodel(cls, model_dir: Path, uri: str) -> Preprocessing:
        """From the MLmodel metadata of a downloaded MLflow model."""
        import yaml

        mlmodel = model_dir / "MLmodel"
        meta = (yaml.safe_load(mlmodel.read_text()) or {}).get("metadata") or {} if mlmodel.is_file() else {}
        if PREPROCESSING_KEY not in meta:
            raise CxrError(f"{uri}: its MLflow model has no {PREPROCESSING_KEY!r} metadata: it was logged by an older "
                           "version that did not store the preprocessing with the model; train and register it again")
        return cls.from_dict(meta[PREPROCESSING_KEY], uri)


def model_image_size(model) -> int:
    return int(model.inputs[0].shape[1])
