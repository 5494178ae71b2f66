"""Zero-shot classification heads: the frozen classifiers every expert and merge is read through.

docs/METHODS.md §3: per class, encode every prompt template, L2-normalise each embedding, average them,
L2-normalise the mean; stack the classes. The head depends only on (model, pretrained, dataset),
never on fine-tuning (the text tower stays pretrained), which is why docs/DESIGN.md computes it once
and caches it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from benchmark.trials.evaluation import bare_model


def zeroshot_head(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
) -> torch.Tensor:
    """Head [C, D] float32 on the model's device, one unit-norm row per class name.

    ``templates`` are format strings with one ``{}`` for the class name. All prompts go through
    the text tower in one batch per class.
    """
    if not classnames or not templates:
        raise ValueError("need at least one class name and one template")
    clip = bare_model(model)
    device = next(clip.parameters()).device
    was_training = clip.training
    clip.eval()
    rows = []
    try:
        with torch.inference_mode():
            for name in classnames:
                tokens = tokenizer([template.format(name) for template in templates]).to(device)
                embeddings = F.normalize(clip.encode_text(tokens).float(), dim=-1)
                rows.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    finally:
        clip.train(was_training)
    # Leave inference mode behind: the head is used as a constant inside autograd (fine-tuning).
    return torch.stack(rows).clone()
