"""ResNet34 (He et al. 2016, basic blocks) in Keras, laid out like torchvision's, and a converter from
torchvision's weights.

Keras ships no ResNet34 (``keras.applications`` starts at ResNet50), and seed 2 fine-tuned fastai's
``resnet34``, which is torchvision's. So the network is built here, layer for layer as torchvision builds it:

* stem ``conv1`` 7×7/2 (64) → ``bn1`` → ``relu`` → ``maxpool`` 3×3/2; then ``layer1`` … ``layer4`` of
  3, 4, 6, 3 basic blocks (64, 128, 256, 512 filters; the first block of layers 2-4 has stride 2 and a 1×1
  ``downsample`` convolution + BatchNorm on its shortcut);
* a basic block: 3×3 conv (stride) → BN → ReLU → 3×3 conv → BN, added to the shortcut, ReLU;
* convolutions without bias; BatchNorm with torchvision's epsilon (1e-5) and momentum (0.1, Keras 0.9);
  padding exactly PyTorch's (explicit symmetric zero padding before every strided convolution and the max
  pool; Keras' ``same`` would pad bottom/right only), so converted weights give the same outputs;
* from scratch, convolutions start as torchvision's (Kaiming normal, fan out), BatchNorm at 1 / 0.

Layer names are torchvision's state-dict module paths with ``_`` for ``.`` (``layer2.0.downsample.1`` →
``layer2_0_downsample_1``), so :func:`assign_torchvision` maps every tensor by name:
conv weights ``(out, in, kh, kw)`` → Keras ``(kh, kw, in, out)``; BatchNorm ``weight, bias, running_mean,
running_var`` → ``gamma, beta, moving_mean, moving_variance``; ``fc.*`` (the ImageNet classifier) and
``num_batches_tracked`` are not used.

**Getting seed 2's starting point** (``train.weights: imagenet`` with ``train.backbone: resnet34``): download
torchvision's ``resnet34`` ImageNet weights (``resnet34-b627a593.pth``, the ``IMAGENET1K_V1`` weights
fastai uses) where you can, then ``cxr convert-weights --state-dict resnet34-b627a593.pth``. That writes
:data:`IMAGENET_FILE` into the Keras cache (``$KERAS_HOME/models``), where ``imagenet`` finds it; ``--out``
writes it elsewhere (then set ``train.weights`` to that file). A ``.pth`` needs PyTorch to read; without
it, export the state dict to ``.npz`` once where PyTorch is
(``numpy.savez(out, **{k: v.numpy() for k, v in torch.load(pth).items()})``) and convert the ``.npz``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from components.core.contract.errors import DataError, ParamsError

BLOCKS = (3, 4, 6, 3)
FILTERS = (64, 128, 256, 512)
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1
IMAGENET_FILE = "resnet34_torchvision_imagenet_notop.weights.h5"
# torchvision's resnet34 state dict: 110 tensors of the body (fc.weight, fc.bias and the 36
# num_batches_tracked counters aside); a converted file must have used every one
UNUSED_SUFFIXES = ("num_batches_tracked",)
UNUSED_PREFIXES = ("fc.",)


def _conv(keras, x, filters: int, kernel: int, stride: int, name: str):
    layers = keras.layers
    init = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    pad = (kernel - 1) // 2
    if stride > 1 and pad:  # PyTorch pads symmetrically; Keras' "same" would pad bottom/right only
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, kernel_initializer=init,
                         name=name)(x)


def _bn(keras, x, name: str):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _basic_block(keras, x, filters: int, stride: int, name: str):
    layers = keras.layers
    shortcut = x
    y = _conv(keras, x, filters, 3, stride, f"{name}_conv1")
    y = _bn(keras, y, f"{name}_bn1")
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = _conv(keras, y, filters, 3, 1, f"{name}_conv2")
    y = _bn(keras, y, f"{name}_bn2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(keras, x, filters, 1, stride, f"{name}_downsample_0")
        shortcut = _bn(keras, shortcut, f"{name}_downsample_1")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_relu2")(y)


def resnet34(keras, x):
    """The ResNet34 body on tensor ``x`` (preprocessed RGB): layers of the enclosing model (a flat graph)."""
    layers = keras.layers
    x = _conv(keras, x, 64, 7, 2, "conv1")
    x = _bn(keras, x, "bn1")
    x = layers.Activation("relu", name="relu")(x)
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)  # after a ReLU: zeros pad like PyTorch's -inf
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for i, (blocks, filters) in enumerate(zip(BLOCKS, FILTERS, strict=True), start=1):
        for j in range(blocks):
            x = _basic_block(keras, x, filters, 2 if (j == 0 and i > 1) else 1, f"layer{i}_{j}")
    return x


def backbone_model(input_shape=(None, None, 3)):
    """ResNet34's body alone as a Keras model (what weights files hold: ``include_top=False``)."""
    import keras

    inp = keras.Input(input_shape, name="resnet34_input")
    return keras.Model(inp, resnet34(keras, inp), name="resnet34")


def weight_layer_names() -> list[str]:
    """The names of ResNet34's layers that hold weights (36 convolutions, 36 BatchNorms), block by block."""
    names = ["conv1", "bn1"]
    for i, blocks in enumerate(BLOCKS, start=1):
        for j in range(blocks):
            p = f"layer{i}_{j}"
            names += [f"{p}_conv1", f"{p}_bn1", f"{p}_conv2", f"{p}_bn2"]
            if j == 0 and i > 1:
                names += [f"{p}_downsample_0", f"{p}_downsample_1"]
    return names


def _layer_name(key: str) -> tuple[str, str]:
    module, _, tensor = key.rpartition(".")
    return module.replace(".", "_"), tensor


def assign_torchvision(model, state_dict: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Set the ResNet34 layers of ``model`` (named as :func:`resnet34` names them) from torchvision's
    ``state_dict`` (name → array). Every body tensor must be used and every ResNet34 weight set; a missing,
    extra or misshapen tensor is a :class:`DataError` naming it. Returns counts."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()
          if not k.endswith(UNUSED_SUFFIXES) and not k.startswith(UNUSED_PREFIXES)}
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        layer, tensor = _layer_name(key)
        grouped.setdefault(layer, {})[tensor] = value
    expected = set(weight_layer_names())
    missing = sorted(expected - set(grouped))
    extra = sorted(set(grouped) - expected)
    if missing or extra:
        raise DataError(f"not a torchvision resnet34 state dict: missing {missing[:5]}{'…' if len(missing) > 5 else ''}"
                        f", unexpected {extra[:5]}{'…' if len(extra) > 5 else ''}")
    tensors = 0
    for name, tensors_of in grouped.items():
        layer = model.get_layer(name)
        if layer.__class__.__name__ == "Conv2D":
            values = [tensors_of["weight"].transpose(2, 3, 1, 0)]
        else:
            values = [tensors_of[t] for t in ("weight", "bias", "running_mean", "running_var")]
        current = layer.get_weights()
        if [v.shape for v in values] != [w.shape for w in current]:
            raise DataError(f"{name}: torchvision shapes {[v.shape for v in values]} do not fit "
                            f"{[w.shape for w in current]}")
        layer.set_weights([v.astype(w.dtype) for v, w in zip(values, current, strict=True)])
        tensors += len(tensors_of)
    return {"layers": len(grouped), "tensors": tensors}


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A state dict from ``.npz`` (arrays named by their keys) or ``.pth``/``.pt`` (needs PyTorch)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"state dict {path} not found")
    if path.suffix == ".npz":
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    if path.suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError:
            raise DataError(f"{path}: reading a .pth needs PyTorch (pip install torch), or export it to .npz where "
                            "PyTorch is: numpy.savez(out, **{k: v.numpy() for k, v in torch.load(pth).items()})"
                            ) from None
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        return {k: v.detach().cpu().numpy() for k, v in sd.items()}
    raise DataError(f"{path}: expected a .pth/.pt (PyTorch) or .npz state dict")


def default_output() -> Path:
    from components.core.contract.backbones import keras_cache_dir

    return keras_cache_dir() / IMAGENET_FILE


def convert(state_dict_path: str | Path, out: str | Path | None = None) -> dict:
    """torchvision resnet34 state dict (a ``.pth`` or ``.npz`` file) → a Keras weights file of the body
    (``include_top=False``): ``out`` (a ``.weights.h5``), by default :data:`IMAGENET_FILE` in the Keras cache,
    where ``train.weights: imagenet`` finds it."""
    return convert_arrays(read_state_dict(state_dict_path), out)


def convert_arrays(state_dict: Mapping[str, np.ndarray], out: str | Path | None = None) -> dict:
    """:func:`convert` for a state dict already in memory (name → array)."""
    from components.core.contract.fsutil import atomic_path

    out = Path(out) if out else default_output()
    if not out.name.endswith(".weights.h5"):
        raise ParamsError(f"--out {out}: the file name must end with .weights.h5 (Keras' weights format)")
    model = backbone_model()
    counts = assign_torchvision(model, state_dict)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        target = tmp.with_name(tmp.name + ".weights.h5")  # Keras insists on the suffix
        try:
            model.save_weights(target)
            target.replace(tmp)
        finally:
            target.unlink(missing_ok=True)
    return {"out": str(out), **counts, "weights": int(sum(int(np.prod(w.shape)) for w in model.weights)),
            "use": "train.weights: imagenet" if out == default_output() else f"train.weights: {out}"}
