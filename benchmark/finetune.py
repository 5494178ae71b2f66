"""Fine-tuning one expert: the image encoder trained through its task's frozen zero-shot head.

METHODS §3's recipe (task-vector papers, MagMax): only the image encoder moves; the text tower,
the logit scale and the head stay pretrained, so τ = θ_t − θ0 lives in ``model.visual`` alone and
every expert is read through the same classifier as θ0. AdamW, linear warm-up then cosine decay,
gradient-norm clipping, cross-entropy. Plain PyTorch on purpose (STYLE.md, Ray's examples): the
loop runs and is tested without a cluster; Ray Train wraps it from the outside.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.evaluation import bare_model, image_mean_std, to_model_input


@dataclass
class FinetuneRecipe:
    """Expert fine-tuning hyper-parameters; defaults are the toy-sized recipe (≈15 s on one core).

    The paper's ViT recipe is lr 1e-5, batch 128, 500 warm-up steps, several epochs.
    """

    steps: int = 150
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup: int = 15
    grad_clip: float = 1.0
    seed: int = 0


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def freeze_all_but_image_encoder(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` so only ``visual`` trains; returns its parameters.

    Call it before wrapping the model in DDP: DDP registers the parameters that require grad at
    construction, and frozen ones (text tower, logit scale) then never enter gradient buckets.
    """
    clip = bare_model(model)
    for p in clip.parameters():
        p.requires_grad_(False)
    params = list(clip.visual.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def _image_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Normalised image features through ``model.forward`` so a DDP wrapper can sync gradients."""
    out = model(image=x)
    features = out["image_features"] if isinstance(out, dict) else out[0]
    return F.normalize(features, dim=-1)


def finetune_image_encoder(
    model: torch.nn.Module,
    head: torch.Tensor,
    images_uint8: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    recipe: FinetuneRecipe,
    *,
    log: Callable[[dict[str, float]], None] | None = None,
    log_every: int = 50,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Fine-tune ``model.visual`` in place on (images, labels) through the frozen ``head``.

    ``model`` is an open_clip CLIP or a wrapper holding it in ``.module`` (DDP); a bare model is
    moved to ``device``, a wrapped one must already be there. Logits use the *pretrained* logit
    scale (≈15 for the toy): a fixed 100 makes the cross-entropy needlessly sharp and hurt both
    experts and merges (TOY_NOTES). Batches are drawn epoch by epoch from a permutation seeded by
    ``recipe.seed``. Returns the final loss (mean of the last 10 % of steps), the first loss, the
    training accuracy over those last steps, steps and seconds. The model is left in eval mode and
    its text tower and logit scale are untouched.
    """
    started = time.perf_counter()
    clip = bare_model(model)
    if clip is model:
        clip.to(device)
    head = head.detach().to(device=device, dtype=torch.float32)
    images = torch.as_tensor(images_uint8)
    targets = torch.as_tensor(labels).long()
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    if len(images) != len(targets) or len(images) == 0:
        raise ValueError(f"need matching, non-empty images and labels ({len(images)} vs {len(targets)})")
    mean, std = image_mean_std(clip)
    params = freeze_all_but_image_encoder(clip)
    logit_scale = clip.logit_scale.detach().exp().to(device)

    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, recipe.steps, recipe.warmup)
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    order = torch.empty(0, dtype=torch.long)
    losses: list[float] = []
    hits: list[float] = []
    clip.eval()
    clip.visual.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            for step in range(recipe.steps):
                if len(order) < recipe.batch_size:
                    order = torch.cat([order, torch.randperm(len(images), generator=generator)])
                batch, order = order[: recipe.batch_size], order[recipe.batch_size :]
                x = to_model_input(images[batch].to(device), mean, std)
                y = targets[batch].to(device)
                logits = logit_scale * _image_features(model, x) @ head.T
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip and recipe.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                hits.append(float((logits.argmax(dim=-1) == y).float().mean()))
                if log is not None and (step % log_every == 0 or step == recipe.steps - 1):
                    log({"step": float(step), "loss": losses[-1], "lr": schedule.get_last_lr()[0]})
    finally:
        clip.eval()
    tail = max(1, recipe.steps // 10)
    return {
        "final_loss": float(np.mean(losses[-tail:])) if losses else float("nan"),
        "first_loss": losses[0] if losses else float("nan"),
        "train_accuracy": float(np.mean(hits[-tail:])) if hits else float("nan"),
        "steps": float(recipe.steps),
        "seconds": time.perf_counter() - started,
    }


def recipe_dict(recipe: FinetuneRecipe) -> dict:
    """The recipe as plain data, for content keys and manifests."""
    return asdict(recipe)
