"""Contrastive pre-training of the toy CLIP: the run that gives θ0 real zero-shot ability.

Merging is only interesting from a pre-trained θ0 (task vectors from a random init do not add
up), and the embedded default cannot download one, so it is trained on the suite's pre-training
pairs — once, by the maintainers, and shipped (``benchmark.toy.shipped``); this module is what
``run_bench.py toy pretrain`` and any other recipe run. The objective is CLIP's symmetric InfoNCE with one change: the
toy captions repeat (a few thousand distinct strings), and plain CLIP loss would push an image
away from every other image's identical caption. Captions are therefore deduplicated per batch:

- image → text: softmax over the batch's *distinct* captions, the image's own caption is the one
  positive;
- text → image: softmax over the batch's images, every image carrying that caption is a positive
  (the loss is −log of the probability mass on the positives).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.experts.finetune import warmup_cosine
from benchmark.toy.model import toy_tokenizer
from benchmark.toy.suite import pretraining_pairs
from benchmark.trials.evaluation import image_mean_std, to_model_input

_MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class PretrainRecipe:
    """Pre-training hyper-parameters; the defaults are the shipped θ0's recipe (``PretrainSpec``)."""

    steps: int = 600
    batch_size: int = 256
    lr: float = 2e-3
    warmup: int = 50
    n_pairs: int = 40000
    seed: int = 0
    weight_decay: float = 0.1


def adamw_param_groups(named_params, weight_decay: float) -> list[dict]:
    """Decay matrices only; gains, biases, embeddings' scales and the logit scale are not decayed.

    Decaying norms' gains or the temperature pulls them towards zero for no regularisation
    benefit; this split is the usual one for CLIP training.
    """
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "logit_scale" in name or "bias" in name or "ln_" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def multi_positive_clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, caption_index: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric contrastive loss with deduplicated captions (module docstring).

    ``image_features`` [B, D] and ``text_features`` [U, D] are L2-normalised; ``caption_index`` [B]
    says which of the U distinct captions describes each image.
    """
    logits = logit_scale * image_features @ text_features.T  # [B, U]
    image_to_text = F.cross_entropy(logits, caption_index)
    positives = F.one_hot(caption_index, num_classes=text_features.shape[0]).T.bool()  # [U, B]
    per_text = logits.T
    log_mass_positive = torch.logsumexp(per_text.masked_fill(~positives, float("-inf")), dim=1)
    text_to_image = (torch.logsumexp(per_text, dim=1) - log_mass_positive).mean()
    return 0.5 * (image_to_text + text_to_image)


def pretrain(
    model: torch.nn.Module,
    recipe: PretrainRecipe,
    *,
    log: Callable[[dict[str, float]], None] | None = None,
    log_every: int = 50,
) -> dict[str, float]:
    """Train ``model`` (an open_clip CLIP, both towers) in place on ``pretraining_pairs``.

    AdamW with linear warm-up and cosine decay; the logit scale is clamped at 100 after every
    step, as in CLIP. Deterministic for a recipe on a given thread count: batches come from a
    generator seeded by ``recipe.seed`` and torch's global state is forked, not consumed.
    Returns the final loss (mean of the last 10% of steps), the first loss, the learned logit
    scale and timings. The model is left in eval mode.
    """
    started = time.perf_counter()
    images_np, captions = pretraining_pairs(recipe.n_pairs, recipe.seed)
    distinct, caption_ids = np.unique(np.asarray(captions), return_inverse=True)
    tokens = toy_tokenizer()(list(distinct))
    images = torch.from_numpy(images_np)
    caption_ids_t = torch.from_numpy(caption_ids.astype(np.int64))
    data_seconds = time.perf_counter() - started

    device = next(model.parameters()).device
    mean, std = image_mean_std(model)
    tokens = tokens.to(device)
    optimizer = torch.optim.AdamW(adamw_param_groups(model.named_parameters(), recipe.weight_decay), lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, recipe.steps, recipe.warmup)
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    losses: list[float] = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        for step in range(recipe.steps):
            batch = torch.randint(len(images), (recipe.batch_size,), generator=generator)
            present, caption_index = torch.unique(caption_ids_t[batch], return_inverse=True)
            x = to_model_input(images[batch].to(device), mean, std)
            image_features = F.normalize(model.encode_image(x), dim=-1)
            text_features = F.normalize(model.encode_text(tokens[present.to(device)]), dim=-1)
            loss = multi_positive_clip_loss(
                image_features, text_features, caption_index.to(device), model.logit_scale.exp()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, _MAX_LOGIT_SCALE)
            losses.append(loss.item())
            if log is not None and (step % log_every == 0 or step == recipe.steps - 1):
                log({"step": float(step), "loss": losses[-1], "lr": schedule.get_last_lr()[0]})
    model.eval()
    tail = max(1, recipe.steps // 10)
    return {
        "final_loss": float(np.mean(losses[-tail:])) if losses else float("nan"),
        "first_loss": losses[0] if losses else float("nan"),
        "logit_scale": float(model.logit_scale.detach().exp()),
        "n_distinct_captions": float(len(distinct)),
        "data_seconds": data_seconds,
        "seconds": time.perf_counter() - started,
        "steps": float(recipe.steps),
    }


def recipe_dict(recipe: PretrainRecipe) -> dict:
    """The recipe as plain data, for content keys and manifests."""
    return asdict(recipe)
