"""``preprocess``: how films are fitted to the model's square, and the shard size."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from components.core.contract.params.base import Section

# how a film is fitted to the model's square: pad: whole film, black letterbox bands; pad_edge: whole film, bands
# filled by repeating the film's edge (no sharp black rectangle whose height is the aspect ratio); crop: centre
# square (cuts the long side). The default was chosen by the shortcut tests: BENCHMARKS.md "Resize modes and shortcuts".
ResizeMode = Literal["pad", "pad_edge", "crop"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)


class PreprocessConfig(Section):
    resize: ResizeMode = "crop"
    workers: int = Field(2, ge=1, le=256)
    # target size of one shard file (uint8 images of train.image_size²; the images per shard follow from it)
    shard_mb: float = Field(64.0, gt=0, le=4096)
