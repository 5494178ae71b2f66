"""Every merger against an independent, naive reference written here from METHODS §2.

The references work on whole flattened task vectors with sorts, Python loops and full SVDs, the
opposite of the streamed, selection-based, block-wise implementations in ``ww``; agreement on
random banks (several tensors, 0-D to 4-D, several block sizes) cross-checks both.
"""

import math
from fractions import Fraction

import pytest
import torch

import ww
from ww.engine.counter_rng import stream_key, uniform_indices, uniform_lanes16

LAYOUT = {
    "visual.conv1.weight": (4, 3, 2, 2),
    "visual.class_embedding": (6,),
    "visual.positional_embedding": (5, 6),
    "visual.scale": (),
    "visual.attn.in_proj_weight": (12, 6),
    "visual.mlp.c_proj.weight": (6, 9),
    "visual.proj": (6, 4),
    "text_projection": (4, 3),
}


def random_taus(tasks, seed, dtype=torch.float64, shared=0.5):
    """Task vectors with a shared component (so signs agree more than by chance) and distinct values."""
    generator = torch.Generator().manual_seed(seed)
    common = {name: torch.randn(shape, generator=generator, dtype=dtype) for name, shape in LAYOUT.items()}
    return [
        {
            name: shared * common[name] + torch.randn(shape, generator=generator, dtype=dtype)
            for name, shape in LAYOUT.items()
        }
        for _ in range(tasks)
    ]


def flat(state_dict):
    return torch.cat([state_dict[name].reshape(-1) for name in LAYOUT])


def unflat(vector):
    out, start = {}, 0
    for name, shape in LAYOUT.items():
        size = math.prod(shape)
        out[name] = vector[start : start + size].reshape(shape)
        start += size
    return out


def count_of(fraction, total):
    return max(1, math.ceil(Fraction(repr(fraction)) * total))


# ---------------------------------------------------------------- naive references


def ref_ties(taus, k=0.2):
    rows = torch.stack([flat(tau) for tau in taus])
    trimmed = torch.zeros_like(rows)
    for t, row in enumerate(rows):
        ordered = sorted(row.abs().tolist(), reverse=True)
        threshold = ordered[count_of(k, row.numel()) - 1]
        trimmed[t] = torch.tensor(
            [value if abs(value) >= threshold else 0.0 for value in row.tolist()], dtype=rows.dtype
        )
    out = torch.zeros(rows.shape[1], dtype=rows.dtype)
    for i in range(rows.shape[1]):
        column = trimmed[:, i].tolist()
        total = sum(column)
        sign = (total > 0) - (total < 0)
        if total == 0:
            votes = sum((v > 0) - (v < 0) for v in column)
            sign = (votes > 0) - (votes < 0)
        agreeing = [v for v in column if v != 0 and ((v > 0) - (v < 0)) == sign]
        out[i] = sum(agreeing) / len(agreeing) if agreeing and sign else 0.0
    return unflat(out)


def ref_magmax(taus):
    rows = torch.stack([flat(tau) for tau in taus])
    out = torch.zeros(rows.shape[1], dtype=rows.dtype)
    for i in range(rows.shape[1]):
        best = None
        for value in rows[:, i].tolist():
            if best is None or abs(value) >= abs(best):
                best = value
        out[i] = best
    return unflat(out)


def ref_randmix(taus, seed=0):
    out = {}
    for name in LAYOUT:
        stacked = torch.stack([tau[name].reshape(-1) for tau in taus])
        pick = uniform_indices(stream_key(seed, "randmix-merger", name), torch.arange(stacked.shape[1]), len(taus))
        out[name] = torch.tensor(
            [stacked[pick[i], i].item() for i in range(stacked.shape[1])], dtype=stacked.dtype
        ).reshape(LAYOUT[name])
    return out


def ref_dare(taus, p=0.5, seed=0):
    out = []
    for t, tau in enumerate(taus):
        dropped = {}
        for name, value in tau.items():
            group = uniform_lanes16(seed, "dare", name, torch.arange(value.numel()), t + 1)
            draws = group[t].to(torch.int64) + 32768  # uniform over 0..65535
            keep = (draws >= round(p * 65536)).to(value.dtype).reshape(value.shape)
            dropped[name] = value * keep / (1 - p)
        out.append(dropped)
    return out


def ref_breadcrumbs(taus, beta=0.1, gamma=0.01):
    out = {name: torch.zeros(shape, dtype=taus[0][name].dtype) for name, shape in LAYOUT.items()}
    for tau in taus:
        for name, value in tau.items():
            if value.dim() == 0:
                out[name] = out[name] + value
                continue
            rows = value.reshape(-1, value.shape[-1])
            masked = torch.zeros_like(rows)
            d = rows.shape[1]
            removed = math.floor(Fraction(repr(gamma)) * d)
            kept = min(d - removed, count_of(beta, d - removed))
            for r in range(rows.shape[0]):
                order = sorted(range(d), key=lambda j: -abs(rows[r, j].item()))
                for j in order[removed : removed + kept]:
                    masked[r, j] = rows[r, j]
            out[name] = out[name] + masked.reshape(value.shape)
    return out


def ref_consensus(taus, tall_lambda=0.4, k=2):
    rows = torch.stack([flat(tau) for tau in taus])
    multi_task = rows.sum(0)
    users = torch.zeros_like(multi_task)
    for row in rows:
        users += (row.abs() >= tall_lambda * (multi_task - row).abs()).to(rows.dtype)
    return unflat(multi_task * (users >= k).to(rows.dtype))


def ref_pcb(taus, ratio=0.05):
    rows = torch.stack([flat(tau) for tau in taus])
    num_tasks, total = rows.shape
    clamped, normalised = torch.zeros_like(rows), torch.zeros_like(rows)
    for t, row in enumerate(rows):
        ordered = sorted(row.abs().tolist())
        low = ordered[min(math.floor(0.01 * total), total - 1)]
        high = ordered[max(math.floor(0.99 * total) - 1, 0)]
        magnitude = row.abs().clamp(low, high)
        clamped[t] = row.sign() * magnitude
        normalised[t] = row.sign() * ((magnitude - low) / (high - low) if high > low else torch.zeros_like(row))
    scores = torch.zeros_like(rows)
    for t in range(num_tasks):
        intra = torch.exp(num_tasks * normalised[t] ** 2)
        inter = sum(torch.tanh(normalised[t] * normalised[j]) for j in range(num_tasks))
        scores[t] = intra * inter
    weights = torch.zeros_like(rows)
    for t in range(num_tasks):
        threshold = sorted(scores[t].tolist(), reverse=True)[count_of(ratio, total) - 1]
        peak = max(scores[t].tolist())
        kept = torch.where(scores[t] >= threshold, scores[t] - threshold, torch.zeros_like(scores[t]))
        # min-max rescaled (the authors' code); no range when every kept score is the maximum: weight 1
        weights[t] = kept / (peak - threshold) if peak > threshold else (scores[t] >= threshold).to(rows.dtype)
    return unflat((weights * clamped).sum(0) / weights.sum(0).clamp(min=1e-12))


def _is_matrix(name, value):
    return value.dim() == 2 and "text_projection" not in name


def _polar(matrix):
    p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qh


def ref_tsv_m(taus):
    out = {}
    for name in LAYOUT:
        values = [tau[name] for tau in taus]
        if not _is_matrix(name, values[0]):
            out[name] = sum(values) / len(values)
            continue
        per_task = min(values[0].shape) // len(values)
        us, ss, vs = [], [], []
        for value in values:
            u, s, vh = torch.linalg.svd(value, full_matrices=False)
            us.append(u[:, :per_task]), ss.append(s[:per_task]), vs.append(vh[:per_task])
        u, s, vh = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 0)
        out[name] = _polar(u) @ torch.diag(s) @ _polar(vh)
    return out


def ref_iso_c(taus):
    out = {}
    for name in LAYOUT:
        values = [tau[name] for tau in taus]
        if not _is_matrix(name, values[0]):
            out[name] = sum(values) / len(values)
            continue
        u, s, vh = torch.linalg.svd(sum(values), full_matrices=False)
        out[name] = s.mean() * u @ vh
    return out


def ref_iso_cts(taus, common_fraction=0.8):
    out = {}
    for name in LAYOUT:
        values = [tau[name] for tau in taus]
        if not _is_matrix(name, values[0]):
            out[name] = sum(values) / len(values)
            continue
        rank, tasks = min(values[0].shape), len(values)
        common = int(rank * common_fraction)
        per_task = min(round((rank - common) / tasks), rank // tasks)
        common = rank - per_task * tasks
        u, s, vh = torch.linalg.svd(sum(values), full_matrices=False)
        us, ss, vs = [], [], []
        for value in values:
            projected = value - u[:, :common] @ u[:, :common].T @ value
            ut, st, vht = torch.linalg.svd(projected, full_matrices=False)
            us.append(ut[:, :per_task]), ss.append(st[:per_task]), vs.append(vht[:per_task])
        us.append(u[:, :common]), ss.append(s[:common]), vs.append(vh[:common])
        u_all, s_all, vh_all = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 0)
        out[name] = s_all.mean() * _polar(u_all) @ _polar(vh_all)
    return out


REFERENCES = {
    "weight_averaging": lambda taus: {n: sum(t[n] for t in taus) / len(taus) for n in LAYOUT},
    "task_arithmetic": lambda taus: {n: sum(t[n] for t in taus) for n in LAYOUT},
    "ties": ref_ties,
    "dare_ta": lambda taus: {n: sum(t[n] for t in ref_dare(taus)) for n in LAYOUT},
    "dare_ties": lambda taus: ref_ties(ref_dare(taus)),
    "breadcrumbs": ref_breadcrumbs,
    "magmax": ref_magmax,
    "randmix": ref_randmix,
    "consensus": ref_consensus,
    "pcb": ref_pcb,
    "tsv_m": ref_tsv_m,
    "iso_c": ref_iso_c,
    "iso_cts": ref_iso_cts,
}


def test_every_registered_merger_has_a_reference():
    assert set(REFERENCES) == set(ww.MERGERS)


@pytest.mark.parametrize("tasks, seed", [(3, 0), (5, 1)])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_merger_matches_its_naive_reference(name, tasks, seed):
    taus = random_taus(tasks, seed)
    expected = REFERENCES[name](taus)
    bank = ww.TaskVectorBank.from_state_dicts(taus)
    for block_entries in (None, 13):
        merged = bank.unflatten(ww.MERGERS[name].run(bank.stream(block_entries=block_entries, workers=2)))
        for key in LAYOUT:
            torch.testing.assert_close(merged[key], expected[key].to(merged[key].dtype), rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.parametrize(
    "name, params, reference",
    [
        ("ties", {"k": 0.5}, lambda taus: ref_ties(taus, k=0.5)),
        ("breadcrumbs", {"beta": 0.5, "gamma": 0.2}, lambda taus: ref_breadcrumbs(taus, beta=0.5, gamma=0.2)),
        ("consensus", {"tall_lambda": 1.0, "k": 1}, lambda taus: ref_consensus(taus, 1.0, 1)),
        ("pcb", {"ratio": 0.3}, lambda taus: ref_pcb(taus, ratio=0.3)),
        ("iso_cts", {"common_fraction": 0.5}, lambda taus: ref_iso_cts(taus, 0.5)),
        ("randmix", {"seed": 9}, lambda taus: ref_randmix(taus, seed=9)),
        ("dare_ties", {"p": 0.2, "k": 0.4, "seed": 3}, lambda taus: ref_ties(ref_dare(taus, 0.2, 3), k=0.4)),
    ],
)
def test_merger_matches_its_reference_with_other_hyper_parameters(name, params, reference):
    taus = random_taus(4, 2)
    merged = ww.merge(name, taus, **params)
    expected = reference(taus)
    for key in LAYOUT:
        torch.testing.assert_close(merged[key], expected[key], rtol=1e-9, atol=1e-12, msg=key)


def test_global_selection_matches_a_sort_on_a_large_fp32_bank():
    # Above the direct-selection size: the radix histogram path (16-bit buckets, then the bucket).
    generator = torch.Generator().manual_seed(3)
    taus = [
        {"a": torch.randn(300, 400, generator=generator), "b": torch.randn(50_000, generator=generator) * 1e-3}
        for _ in range(3)
    ]
    merged = ww.merge("ties", taus, k=0.2)
    rows = torch.stack([torch.cat([tau["a"].reshape(-1), tau["b"]]) for tau in taus])
    count = math.ceil(0.2 * rows.shape[1])
    thresholds = rows.abs().sort(dim=1, descending=True).values[:, count - 1 : count]
    trimmed = rows * (rows.abs() >= thresholds)
    gamma = trimmed.sum(0).sign()
    agree = (trimmed * gamma > 0).to(rows.dtype)
    expected = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    assert torch.equal(torch.cat([merged["a"].reshape(-1), merged["b"]]), expected)


@pytest.mark.parametrize("tasks, seed", [(3, 0), (8, 2)])
def test_every_merger_on_fp32_banks_stays_within_1e_5_of_its_fp64_reference(tasks, seed):
    """Real banks are fp32: each merger's fp32 output against its reference computed in fp64 on the
    same (fp32-rounded) inputs, relative to the largest reference entry of each tensor."""
    taus32 = [{k: v.float() for k, v in t.items()} for t in random_taus(tasks, seed)]
    for name, reference in REFERENCES.items():
        expected = reference([{k: v.double() for k, v in t.items()} for t in taus32])
        merged = ww.merge(name, taus32)
        for key in LAYOUT:
            assert merged[key].dtype == torch.float32
            scale = expected[key].abs().max().clamp_min(1e-300)
            error = ((merged[key].double() - expected[key]).abs().max() / scale).item()
            assert error <= 1e-5, f"{name} {key}: {error:.1e}"
