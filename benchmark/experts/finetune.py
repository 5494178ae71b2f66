"""Fine-tuning one expert: the image encoder trained through its task's frozen zero-shot head.

docs/METHODS.md §3's recipe (task-vector papers, MagMax): only the image encoder moves; the text tower,
the logit scale and the head stay pretrained, so τ = θ_t − θ0 lives in ``model.visual`` alone and
every expert is read through the same classifier as θ0. AdamW, linear warm-up then cosine decay,
gradient-norm clipping, cross-entropy. Plain PyTorch on purpose (STYLE.md, Ray's examples): the
loop runs and is tested without a cluster; Ray Train wraps it from the outside.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.trials.evaluation import bare_model, image_mean_std, to_model_input


@dataclass
class FinetuneRecipe:
    """Expert fine-tuning hyper-parameters; defaults are the toy-sized recipe.

    The paper's ViT recipe is lr 1e-5, batch 128, 500 warm-up steps, several epochs.
    """

    steps: int = 150
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup: int = 15
    grad_clip: float = 1.0
    seed: int = 0
    precision: str = "fp32"
    checkpoint_every: int = 0


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` = plain fp32.

    ``auto`` is what the paper-scale runs want: bf16 on GPUs that have it (no loss scaling
    needed), fp16 with loss scaling on older GPUs, fp32 on the CPU (CPU autocast is slower than
    fp32 for these small matmuls). An explicit ``bf16`` also works on the CPU, which is how the
    mixed-precision path is tested without a GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def steps_for_epochs(epochs: float, n_examples: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps for ``epochs`` passes over ``n_examples`` with ``world_size`` data-parallel
    workers drawing ``batch_size`` each (at least one step)."""
    return max(1, math.ceil(epochs * n_examples / (batch_size * world_size)))


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
    resume: dict | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """Fine-tune ``model.visual`` in place on (images, labels) through the frozen ``head``.

    ``model`` is an open_clip CLIP or a wrapper holding it in ``.module`` (DDP); a bare model is
    moved to ``device``, a wrapped one must already be there. Logits use the *pretrained* logit
    scale (≈15 for the toy): a fixed 100 makes the cross-entropy needlessly sharp and hurt both
    experts and merges (TOY_NOTES). Batches are drawn epoch by epoch from a permutation seeded by
    ``recipe.seed``. Returns the final loss (mean of the last 10 % of steps), the first loss, the
    training accuracy over those last steps, steps and seconds. The model is left in eval mode and
    its text tower and logit scale are untouched.

    Checkpointing: every ``recipe.checkpoint_every`` steps (and not after the last one, whose
    result is the expert itself) ``on_checkpoint`` receives the full training state — step,
    encoder weights, optimizer and schedule state, loss history. Passing such a state as
    ``resume`` continues the run where it stopped: the data order is replayed from the seed up to
    that step, so a resumed run takes the same batches as an uninterrupted one.
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

    device = torch.device(device)
    amp_dtype = autocast_dtype(recipe.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, recipe.steps, recipe.warmup)
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    order = torch.empty(0, dtype=torch.long)
    losses: list[float] = []
    hits: list[float] = []
    first_step = 0
    if resume is not None:
        first_step = int(resume["step"])
        if not 0 < first_step <= recipe.steps:
            raise ValueError(f"checkpoint at step {first_step} does not fit a run of {recipe.steps} steps")
        bare_model(clip.visual).load_state_dict(resume["visual"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        scaler.load_state_dict(resume.get("scaler") or {})
        losses, hits = list(resume["losses"]), list(resume["hits"])
        for _ in range(first_step):  # replay the data order up to the checkpoint (no compute)
            order = _next_batch(order, len(images), recipe.batch_size, generator)[1]
    clip.eval()
    clip.visual.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            for step in range(first_step, recipe.steps):
                batch, order = _next_batch(order, len(images), recipe.batch_size, generator)
                x = to_model_input(images[batch].to(device), mean, std)
                y = targets[batch].to(device)
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                    logits = logit_scale * _image_features(model, x) @ head.T
                    loss = F.cross_entropy(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if recipe.grad_clip and recipe.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                losses.append(loss.item())
                hits.append(float((logits.argmax(dim=-1) == y).float().mean()))
                if log is not None and (step % log_every == 0 or step == recipe.steps - 1):
                    log({"step": float(step), "loss": losses[-1], "lr": schedule.get_last_lr()[0]})
                done = step + 1
                if (
                    on_checkpoint is not None
                    and recipe.checkpoint_every
                    and done % recipe.checkpoint_every == 0
                    and done < recipe.steps
                ):
                    on_checkpoint(
                        {
                            "step": done,
                            "visual": bare_model(clip.visual).state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(),
                            "scaler": scaler.state_dict(),
                            "losses": list(losses),
                            "hits": list(hits),
                        }
                    )
    finally:
        clip.eval()
    tail = max(1, recipe.steps // 10)
    return {
        "final_loss": float(np.mean(losses[-tail:])) if losses else float("nan"),
        "first_loss": losses[0] if losses else float("nan"),
        "train_accuracy": float(np.mean(hits[-tail:])) if hits else float("nan"),
        "steps": float(recipe.steps),
        "resumed_from_step": float(first_step),
        "seconds": time.perf_counter() - started,
    }


def _next_batch(order: torch.Tensor, n: int, batch_size: int, generator: torch.Generator):
    """The next batch of indices and what is left: epoch after epoch of seeded permutations."""
    if len(order) < batch_size:
        order = torch.cat([order, torch.randperm(n, generator=generator)])
    return order[:batch_size], order[batch_size:]


def recipe_dict(recipe: FinetuneRecipe) -> dict:
    """The recipe as plain data, for content keys and manifests."""
    return asdict(recipe)
