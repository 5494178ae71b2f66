"""The four base mergers of METHODS §2 on hand-computed cases, their registry and validation."""

import math

import pytest
import torch

import ww
from ww.hyperparams import hyperparameters_of
from ww.mergers.ties import keep_count
from ww.registry import merger


def _vectors(*rows, layout=None):
    """Task vectors as state dicts; each row is split into tensors by ``layout`` (name -> length)."""
    layout = layout or {"v": len(rows[0])}
    out = []
    for row in rows:
        state_dict, start = {}, 0
        for name, length in layout.items():
            state_dict[name] = torch.tensor(row[start:start + length], dtype=torch.float32)
            start += length
        out.append(state_dict)
    return out


def _flat(merged):
    return torch.cat([tensor.reshape(-1) for tensor in merged.values()]).tolist()


def test_weight_averaging_is_the_mean_and_task_arithmetic_the_sum():
    vectors = _vectors([1.0, 2.0], [3.0, 6.0], [-1.0, 1.0])
    assert _flat(ww.merge("weight_averaging", vectors)) == [1.0, 3.0]
    assert _flat(ww.merge("task_arithmetic", vectors)) == [3.0, 9.0]


# TIES hand case, k = 0.5 of P = 6 entries -> 3 kept per task (more on threshold ties).
# tau1 |.| = 2,2,1,5,.5,3 -> 3rd largest 2 -> keeps 2,2,5,-3 (four: tie at the threshold)
# tau2 |.| = 2,4,1,1,.2,3 -> 3rd largest 2 -> keeps 2,-4,3
# tau3 |.| = 1,2,8,9,.1,.3 -> 3rd largest 2 -> keeps 2,-8,-9
# e0: 2+2 = 4 -> + -> mean(2, 2) = 2
# e1: 2-4+2 = 0 -> majority: 2 positive vs 1 negative -> + -> mean(2, 2) = 2
# e2: -8 -> -8;  e3: 5-9 = -4 -> - -> -9;  e4: nothing kept -> 0
# e5: -3+3 = 0 and one positive vs one negative -> no elected sign -> 0 (no task agrees)
TIES_TAUS = ([2.0, 2.0, 1.0, 5.0, 0.5, -3.0], [2.0, -4.0, 1.0, -1.0, 0.2, 3.0], [-1.0, 2.0, -8.0, -9.0, 0.1, 0.3])
TIES_EXPECTED = [2.0, 2.0, -8.0, -9.0, 0.0, 0.0]


def test_ties_hand_case_with_threshold_tie_zero_sum_election_and_no_agreeing_task():
    merged = ww.merge("ties", _vectors(*TIES_TAUS), k=0.5)
    assert _flat(merged) == TIES_EXPECTED


def test_ties_trims_over_the_whole_flattened_vector_across_tensors():
    split = _vectors(*TIES_TAUS, layout={"a": 2, "b": 3, "c": 1})
    merged = ww.merge("ties", split, k=0.5)
    assert list(merged) == ["a", "b", "c"]
    assert _flat(merged) == TIES_EXPECTED
    # Globally the top half of [1, 2 | 10, 20] is 10, 20; per tensor it would keep 2 and 20.
    assert _flat(ww.merge("ties", _vectors([1.0, 2.0, 10.0, 20.0], layout={"a": 2, "b": 2}), k=0.5)) == [
        0.0, 0.0, 10.0, 20.0,
    ]


def test_ties_keeps_every_entry_tied_with_the_threshold():
    # k = 0.25 of 4 entries is 1, but both 3s equal the threshold and are kept.
    assert _flat(ww.merge("ties", _vectors([3.0, -3.0, 1.0, 2.0]), k=0.25)) == [3.0, -3.0, 0.0, 0.0]


def test_ties_keep_count_reads_k_as_written():
    assert keep_count(0.1, 30) == 3  # ceil(0.1 * 30) is 4 in binary floating point
    assert keep_count(0.2, 11) == 3
    assert keep_count(1.0, 7) == 7
    assert keep_count(0.001, 10) == 1


def test_ties_default_k_is_twenty_percent():
    assert ww.MERGERS["ties"].defaults == {"k": 0.2}
    # P = 10, k = 0.2 -> 2 kept: 9 and -7; a single task keeps its own values.
    tau = [9.0, 1.0, -7.0, 2.0, 3.0, 0.0, -1.0, 4.0, 5.0, -6.0]
    assert _flat(ww.merge("ties", _vectors(tau))) == [9.0, 0, -7.0, 0, 0, 0, 0, 0, 0, 0]


def test_magmax_takes_largest_magnitude_and_ties_go_to_the_later_task():
    vectors = _vectors([3.0, -2.0, 1.0, 0.5], [-3.0, 2.0, 0.5, -4.0], [1.0, 1.0, -1.0, 2.0])
    # e0: |3| tie tau1/tau2 -> tau2; e1: |2| tie -> tau2; e2: |1| tie tau1/tau3 -> tau3; e3: -4
    assert _flat(ww.merge("magmax", vectors)) == [-3.0, 2.0, -1.0, -4.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", ["weight_averaging", "task_arithmetic", "ties", "magmax"])
def test_mergers_return_the_input_dtype(name, dtype):
    vectors = [{"v": torch.tensor([1.5, -2.0], dtype=dtype)}, {"v": torch.tensor([2.25, 1.0], dtype=dtype)}]
    merged = ww.merge(name, vectors, **({"k": 1.0} if name == "ties" else {}))
    assert merged["v"].dtype == dtype
    expected = {
        "weight_averaging": [1.875, -0.5],
        "task_arithmetic": [3.75, -1.0],
        "ties": [1.875, -2.0],  # signs + and (-2+1 -> -): mean(1.5, 2.25), then -2 alone
        "magmax": [2.25, -2.0],
    }[name]
    assert merged["v"].tolist() == expected


@pytest.mark.parametrize("name", ["weight_averaging", "task_arithmetic", "ties", "magmax"])
def test_mergers_neither_mutate_nor_alias_their_inputs(name):
    vectors = _vectors(*TIES_TAUS)
    originals = [{key: tensor.clone() for key, tensor in vector.items()} for vector in vectors]
    bank = ww.TaskVectorBank.from_state_dicts(vectors[:1])
    bank_before = bank.data.clone()
    ww.merge(name, vectors)
    for tensor in ww.merge(name, bank).values():  # one task: magmax/ties could return the row itself
        tensor.fill_(123.0)
    assert torch.equal(bank.data, bank_before)
    for vector, original in zip(vectors, originals):
        assert torch.equal(vector["v"], original["v"])


def test_unknown_merger_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'ties'"):
        ww.merge("tie", _vectors([1.0]))


def test_unknown_hyper_parameter_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"no hyper-parameter 'kk'.*Valid hyper-parameters: k\."):
        ww.merge("ties", _vectors([1.0]), kk=0.2)
    with pytest.raises(ValueError, match="no hyper-parameter 'k'.*Valid hyper-parameters: none"):
        ww.merge("task_arithmetic", _vectors([1.0]), k=0.2)


@pytest.mark.parametrize("k", [0, 0.0, -0.1, 1.5, math.nan, "0.2", True])
def test_ties_rejects_k_outside_zero_one(k):
    with pytest.raises(ValueError, match="k must"):
        ww.merge("ties", _vectors([1.0, 2.0]), k=k)


def test_ties_accepts_k_equal_to_one():
    assert _flat(ww.merge("ties", _vectors([1.0, -2.0]), k=1)) == [1.0, -2.0]


def test_registry_records_citation_grid_and_defaults():
    record = ww.MERGERS["ties"]
    assert "2306.01708" in record.citation
    assert record.lambdas == tuple(ww.default_lambdas("ties"))
    assert ww.MERGERS["magmax"].defaults == {}
    with pytest.raises(TypeError):
        ww.MERGERS["extra"] = record  # read-only view


def test_hyper_parameters_come_from_the_signature_and_bad_signatures_fail_at_registration():
    def good(tasks, *, alpha=0.5, steps=3):
        return tasks.map(lambda tau, block: tau.sum(0))

    def positional_hyper(tasks, alpha=0.5):
        return tasks.map(lambda tau, block: tau.sum(0))

    def no_default(tasks, *, alpha):
        return tasks.map(lambda tau, block: tau.sum(0))

    assert hyperparameters_of(good) == {"alpha": 0.5, "steps": 3}
    for bad in (positional_hyper, no_default):
        with pytest.raises(TypeError, match="alpha"):
            merger(name="never_registered", citation="-")(bad)
    assert "never_registered" not in ww.MERGERS
    with pytest.raises(ValueError, match="already registered"):
        merger(name="ties", citation="-")(good)
