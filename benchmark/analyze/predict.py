"""Features, logits and agreement for the output-space analyses.

`benchmark.trials.evaluation.evaluate` keeps only counts; comparing models prediction by prediction
(ensembles, agreement, KL) needs the normalised features and logits themselves, computed the same
way (uint8 → normalised on the device, inference mode, the frozen zero-shot head of docs/METHODS.md §3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.trials.evaluation import bare_model, image_mean_std, to_model_input

BATCH_SIZE = 1024


def image_features(
    model: torch.nn.Module, images_uint8: torch.Tensor, batch_size: int = BATCH_SIZE, normalize: bool = True
) -> torch.Tensor:
    """Image features ``[N, D]`` (float32, CPU) of the model's current image encoder, L2-normalised
    as the classifier reads them unless ``normalize=False`` (the raw encoder output, whose norm an
    ensemble of raw features weighs its members by)."""
    clip = bare_model(model)
    device = next(clip.parameters()).device
    mean, std = image_mean_std(model)
    was_training = clip.training
    clip.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images_uint8), batch_size):
                x = to_model_input(images_uint8[start : start + batch_size].to(device), mean, std)
                features = clip.encode_image(x).float()
                chunks.append((F.normalize(features, dim=-1) if normalize else features).cpu())
    finally:
        clip.train(was_training)
    return torch.cat(chunks)


def head_logits(model: torch.nn.Module, head: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """logit_scale.exp() · features · headᵀ (features already normalised; the pretrained scale)."""
    return logit_scale(model) * features @ head.cpu().float().T


def logit_scale(model: torch.nn.Module) -> torch.Tensor:
    """The model's (pre-trained, frozen) logit scale as a CPU float32 scalar."""
    return bare_model(model).logit_scale.detach().exp().cpu().float()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    correct = int((logits.argmax(dim=-1) == labels).sum())
    return correct / len(labels), correct


def agreement(first: torch.Tensor, second: torch.Tensor) -> float:
    """Fraction of examples on which two sets of logits predict the same class."""
    return float((first.argmax(dim=-1) == second.argmax(dim=-1)).double().mean())


def mean_kl(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean over examples of KL(p_ref ‖ p_other) of the softmax distributions, in float64 (nats)."""
    log_p = F.log_softmax(reference.double(), dim=-1)
    log_q = F.log_softmax(other.double(), dim=-1)
    return float((log_p.exp() * (log_p - log_q)).sum(dim=-1).mean())
