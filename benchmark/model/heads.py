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
    chunk: int = 256,
) -> torch.Tensor:
    """Head [C, D] float32 on the model's device, one unit-norm row per class name.

    ``templates`` are format strings with one ``{}`` for the class name. The prompts of all classes
    go through the text tower together, ``chunk`` at a time (a dataset with one template per class
    would otherwise feed it one prompt per call), each chunk cut to its longest prompt
    (``encode_prompts``).
    """
    if not classnames or not templates:
        raise ValueError("need at least one class name and one template")
    clip = bare_model(model)
    device = next(clip.parameters()).device
    was_training = clip.training
    clip.eval()
    prompts = [template.format(name) for name in classnames for template in templates]
    parts = []
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), chunk):
                tokens = tokenizer(prompts[start : start + chunk]).to(device)
                parts.append(F.normalize(encode_prompts(clip, tokens).float(), dim=-1))
    finally:
        clip.train(was_training)
    embeddings = torch.cat(parts).view(len(classnames), len(templates), -1)
    # Leave inference mode behind: the head is used as a constant inside autograd (fine-tuning).
    return F.normalize(embeddings.mean(dim=1), dim=-1).clone()


def encode_prompts(clip: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``clip.encode_text(tokens)``, computed over the prompts' own length instead of the full context.

    Tokenizers pad every prompt to the context length (77 for CLIP) while class prompts are a dozen
    tokens long, so most of the text tower's work is on padding. For open_clip's ``CLIP`` (causal
    attention, pooled at the end-of-text token, which has the largest id) the positions up to the
    last end-of-text token of the batch do not depend on the positions after it, so dropping those
    columns gives the same features. Any other model, or another pooling, takes ``encode_text``.
    """
    import open_clip

    if (
        type(clip).encode_text is not open_clip.CLIP.encode_text
        or getattr(clip, "text_pool_type", None) != "argmax"
        or getattr(clip, "attn_mask", None) is None
    ):
        return clip.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    if length >= tokens.shape[1]:
        return clip.encode_text(tokens)
    tokens = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    if clip.text_projection is None:
        return x
    return clip.text_projection(x) if isinstance(clip.text_projection, torch.nn.Module) else x @ clip.text_projection
