"""Top-1 evaluation of a CLIP image encoder through a frozen zero-shot head (docs/METHODS.md §3).

Evaluation is compute-bound and runs thousands of times per grid (docs/DESIGN.md, performance), so
images stay uint8 until they reach the model's device, normalisation happens there, batches are
large and everything runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


def bare_model(model: torch.nn.Module) -> torch.nn.Module:
    """The CLIP inside a wrapper that keeps it in ``.module`` (DDP, DataParallel), else ``model``.

    Attribute access (``visual``, ``logit_scale``) must reach the CLIP itself, while forward
    passes should go through the wrapper so that it can synchronise gradients.
    """
    return getattr(model, "module", model)


def image_mean_std(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation constants the model was (pre-)trained with.

    open_clip records them in ``visual.preprocess_cfg`` at creation (OpenAI's for most tags); a
    model without that record falls back to OpenAI's constants, which the toy model uses too.
    """
    cfg = getattr(bare_model(model).visual, "preprocess_cfg", None) or {}
    mean = tuple(float(m) for m in cfg.get("mean") or OPENAI_DATASET_MEAN)
    std = tuple(float(s) for s in cfg.get("std") or OPENAI_DATASET_STD)
    return mean, std


def to_model_input(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [N, 3, H, W] to normalised float32, computed on the images' device.

    Move the uint8 batch to the device first: it is a quarter of the bytes of the float batch.
    """
    x = images_uint8.to(torch.float32).div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def classification_logits(model: torch.nn.Module, head: torch.Tensor, images_float: torch.Tensor) -> torch.Tensor:
    """logit_scale.exp() · normalise(encode_image(x)) · headᵀ, the zero-shot classifier of docs/METHODS.md §3.

    The scale is the model's learned (pre-trained) one; it does not change the argmax but it does
    change the cross-entropy that fine-tuning minimises.
    """
    clip = bare_model(model)
    features = F.normalize(clip.encode_image(images_float), dim=-1)
    return clip.logit_scale.exp() * features @ head.to(features.dtype).T


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(bare_model(model).parameters()).device


def evaluate(
    model: torch.nn.Module,
    head: torch.Tensor,
    images_uint8: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1024,
    outcomes: bool = False,
) -> dict[str, Any]:
    """Top-1 accuracy of ``model`` with ``head`` on uint8 images; counts kept so results can be pooled.
    With ``outcomes=True`` also ``correct``, the per-example outcome (bool array in the order of
    ``images``), so that two models evaluated on the same examples can be compared example by
    example (paired statistics); off by default, so the result stays a JSON-able dict of numbers.

    Leaves the model's train/eval mode as it found it.
    """
    images = torch.as_tensor(images_uint8)
    targets = torch.as_tensor(labels).long()
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} labels")
    device = _model_device(model)
    mean, std = image_mean_std(model)
    head = head.to(device)
    was_training = bare_model(model).training
    bare_model(model).eval()
    hits: list[torch.Tensor] = []
    try:
        # fp16 autocast on GPUs (docs/DESIGN.md: evaluation is compute-bound); the CPU keeps fp32
        autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            for start in range(0, len(images), batch_size):
                x = to_model_input(images[start : start + batch_size].to(device, non_blocking=True), mean, std)
                pred = classification_logits(model, head, x).argmax(dim=-1).cpu()
                hits.append(pred == targets[start : start + batch_size])
    finally:
        bare_model(model).train(was_training)
    n = len(images)
    correct = torch.cat(hits).numpy() if hits else np.zeros(0, dtype=bool)
    n_correct = int(correct.sum())
    result = {"n_examples": n, "n_correct": n_correct, "accuracy": n_correct / n if n else float("nan")}
    if outcomes:
        result["correct"] = correct
    return result


def balanced_accuracy(correct: np.ndarray, labels: np.ndarray | torch.Tensor) -> float:
    """Mean over the classes present in ``labels`` of the per-class recall (docs/METHODS.md §3, for DG).

    Plain accuracy weighs classes by their frequency in the held-out domain; balanced accuracy
    gives each class the same weight, so a merge that only gets the majority class right is not
    rewarded for it.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    if len(labels) != len(correct):
        raise ValueError(f"{len(correct)} outcomes but {len(labels)} labels")
    if not len(labels):
        return float("nan")
    classes, index = np.unique(labels, return_inverse=True)
    hits = np.bincount(index, weights=correct, minlength=len(classes))
    return float(np.mean(hits / np.bincount(index, minlength=len(classes))))
