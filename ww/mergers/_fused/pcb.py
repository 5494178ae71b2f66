"""PCB for the compiler (`ww.kernels`): fused twins of `ww.mergers.pcb.balance_scores` and `ww.mergers.pcb.pcb_block`.

The same terms as the readable forms, added in the same order, with the task loops unrolled so
that inductor keeps every product of a column in registers. PCB has no one-pass form (every
weight depends on the exact value of its threshold; see `ww.mergers.pcb`).
"""

from __future__ import annotations

import torch


def balance_scores(tau: torch.Tensor, low, high, inverse_span) -> torch.Tensor:
    """`ww.mergers.pcb.balance_scores` for the compiler: the same terms in the same order, loops unrolled.

    All T(T+1)/2 products, exps and quotients of a column stay in registers: one loop over the
    block instead of ~5 passes per pair of tasks.
    """
    num_tasks = tau.shape[0]
    magnitude, signed = [], []
    for t in range(num_tasks):
        clamped = torch.maximum(torch.minimum(tau[t].abs(), high[t]), low[t])
        magnitude.append((clamped - low[t]) * inverse_span[t])
        signed.append(tau[t].sign() * magnitude[t])
    inter = [torch.zeros_like(magnitude[0]) for _ in range(num_tasks)]
    for t in range(num_tasks):
        factor = signed[t] * -2
        row_sum = None
        for j in range(t, num_tasks):
            exp = (signed[j] * factor).exp()
            tanh = (1 - exp) / (exp + 1)
            row_sum = tanh if row_sum is None else row_sum + tanh
            if j > t:
                inter[j] = inter[j] + tanh
        inter[t] = inter[t] + row_sum
    return torch.stack([(magnitude[t] * magnitude[t] * num_tasks).exp() * inter[t] for t in range(num_tasks)])


def pcb_block(tau, scores, low, high, inverse_span, threshold, inverse_range, floor) -> torch.Tensor:
    """`ww.mergers.pcb.pcb_block` for the compiler (task loop unrolled, sums in the eager order)."""
    numerator, total = None, None
    for t in range(tau.shape[0]):
        clamped = torch.maximum(torch.minimum(tau[t].abs(), high[t]), low[t])
        weight = (scores[t] - threshold[t]).clamp(min=0) * inverse_range[t] + torch.where(
            scores[t] >= threshold[t], floor[t], 0.0
        )
        term = clamped * tau[t].sign() * weight
        numerator = term if numerator is None else numerator + term
        total = weight if total is None else total + weight
    return numerator / total.clamp(min=1e-12)
