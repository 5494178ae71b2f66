"""Decoding real images into the uint8 tensors the harness evaluates and fine-tunes on.

The eval tensor cache (docs/DESIGN.md, data flow step 2) stores every split once as uint8 [N, 3, R, R]
at the model's resolution R, so the preprocessing here must be the model's own test-time
preprocessing minus normalisation (which ``benchmark.trials.evaluation.to_model_input`` does on the
device): RGB, resize the *shorter* side to R with bicubic resampling, centre crop R×R. That is
open_clip's ``resize_mode: shortest`` / ``interpolation: bicubic`` for every pretrained tag of the
paper's models (openai, laion, datacomp, ...), done with PIL as torchvision's ``Resize`` and
``CenterCrop`` do, so cached tensors equal what ``preprocess(image)`` would produce before
``Normalize`` (up to uint8 rounding, which the model never sees anyway since ``ToTensor`` works
from the same uint8 pixels).

Decoding runs in a thread pool: Pillow releases the GIL while it decodes and resamples, so
threads scale over cores without pickling images between processes.

An image that cannot be decoded (corrupt, truncated, missing) does not stop the pass, but the split
is refused at its end with every such file named: a test set silently shorter than the papers'
would make results incomparable, and the fix (replace or delete the files) is the user's to make.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from benchmark.data.layouts import DatasetMalformedError

#: Bump when the preprocessing below changes: it is part of every real eval-cache key.
PREPROCESS_VERSION = "shortest-bicubic-centercrop-1"


def to_rgb_square(image: Image.Image, resolution: int) -> np.ndarray:
    """uint8 [3, R, R]: RGB, shorter side resized to R (bicubic), centre-cropped to R×R."""
    image = image.convert("RGB")
    width, height = image.size
    if (width, height) != (resolution, resolution):
        # torchvision Resize(int): the short side becomes R, the long side int(R * long / short)
        if width <= height:
            size = (resolution, int(resolution * height / width))
        else:
            size = (int(resolution * width / height), resolution)
        if size != (width, height):
            image = image.resize(size, Image.BICUBIC)
        width, height = image.size
        # torchvision CenterCrop: offsets rounded half to even, as int(round(x))
        left = int(round((width - resolution) / 2.0))
        top = int(round((height - resolution) / 2.0))
        image = image.crop((left, top, left + resolution, top + resolution))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def default_threads() -> int:
    """Decoding threads: every core the process may use (Ray sets the affinity of its workers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


def decode_batches(
    load: Callable[[int], Image.Image],
    indices: Sequence[int],
    resolution: int,
    *,
    batch_size: int = 256,
    threads: int | None = None,
    names: Sequence[str] | None = None,
    what: str = "the split",
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(offset, uint8 [B, 3, R, R])`` for consecutive chunks of ``indices``.

    ``load(i)`` returns the i-th image as PIL; chunks keep memory bounded however large the split.
    Undecodable images yield zeros while the pass goes on; after the last chunk
    :class:`UnreadableImagesError` names them (``names[i]``, else the index) and ``what`` they belong to.
    """
    threads = threads or default_threads()
    failures: list[tuple[int, BaseException]] = []

    def one(i: int) -> np.ndarray:
        try:
            with _opened(load(i)) as image:
                return to_rgb_square(image, resolution)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            failures.append((i, exc))
            return np.zeros((3, resolution, resolution), np.uint8)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(indices), batch_size):
            yield start, np.stack(list(pool.map(one, indices[start : start + batch_size])))
    if failures:
        failures.sort(key=lambda failure: failure[0])
        shown = [
            f"{names[i] if names is not None else f'#{i}'} ({type(exc).__name__}: {exc})" for i, exc in failures[:5]
        ]
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise UnreadableImagesError(
            f"{len(failures)} of {len(indices)} images of {what} cannot be decoded: {'; '.join(shown)}{more}. "
            "Replace them with intact copies (re-extract or re-download the archive); in folder layouts deleting "
            "them also works. The split is refused rather than silently shortened"
        )


class UnreadableImagesError(DatasetMalformedError):
    """Images of a split that cannot be decoded; the message names them."""


class _opened:
    """Close images that came from files once converted (file handles are scarce on big splits)."""

    def __init__(self, image: Image.Image):
        self.image = image

    def __enter__(self) -> Image.Image:
        return self.image

    def __exit__(self, *exc) -> None:
        close = getattr(self.image, "close", None)
        if close is not None:
            close()
