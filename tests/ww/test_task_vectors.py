"""ww.task_vector / ww.apply_task_vector: τ = θt − θ0 over float entries, θ0 + scale·τ back."""

import pytest
import torch

import ww


def _pretrained():
    return {
        "w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "b": torch.tensor([0.5]),
        "steps": torch.tensor(7),
        "mask": torch.tensor([True, False]),
    }


def _finetuned():
    return {
        "w": torch.tensor([[2.0, 0.0], [3.0, 10.0]]),
        "b": torch.tensor([-0.5]),
        "steps": torch.tensor(9),
        "mask": torch.tensor([False, False]),
    }


def test_task_vector_is_finetuned_minus_pretrained_and_skips_int_and_bool_buffers():
    vector = ww.task_vector(_finetuned(), _pretrained())
    assert list(vector) == ["w", "b"]
    torch.testing.assert_close(vector["w"], torch.tensor([[1.0, -2.0], [0.0, 6.0]]))
    torch.testing.assert_close(vector["b"], torch.tensor([-1.0]))


@pytest.mark.parametrize("side", ["finetuned", "pretrained"])
def test_task_vector_names_a_key_missing_on_either_side(side):
    finetuned, pretrained = _finetuned(), _pretrained()
    del (finetuned if side == "finetuned" else pretrained)["b"]
    with pytest.raises(ValueError, match="'b'"):
        ww.task_vector(finetuned, pretrained)


def test_task_vector_names_the_key_with_mismatched_shape():
    finetuned = _finetuned()
    finetuned["w"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="'w'.*shape"):
        ww.task_vector(finetuned, _pretrained())


def test_apply_task_vector_round_trips_float_entries_and_copies_buffers_from_pretrained():
    pretrained, finetuned = _pretrained(), _finetuned()
    rebuilt = ww.apply_task_vector(pretrained, ww.task_vector(finetuned, pretrained))
    torch.testing.assert_close(rebuilt["w"], finetuned["w"])
    torch.testing.assert_close(rebuilt["b"], finetuned["b"])
    assert rebuilt["steps"].item() == 7  # θ0's buffer, not the expert's
    assert rebuilt["mask"].tolist() == [True, False]


def test_apply_task_vector_scales_the_vector():
    merged = ww.apply_task_vector(_pretrained(), {"w": torch.tensor([[2.0, 2.0], [-4.0, 0.0]])}, scale=0.5)
    torch.testing.assert_close(merged["w"], torch.tensor([[2.0, 3.0], [1.0, 4.0]]))
    torch.testing.assert_close(merged["b"], torch.tensor([0.5]))


def test_apply_task_vector_rejects_unknown_keys_non_float_targets_and_bad_shapes():
    with pytest.raises(ValueError, match="'nope'"):
        ww.apply_task_vector(_pretrained(), {"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="'steps'"):
        ww.apply_task_vector(_pretrained(), {"steps": torch.zeros(())})
    with pytest.raises(ValueError, match="'b'.*shape"):
        ww.apply_task_vector(_pretrained(), {"b": torch.zeros(2)})
    with pytest.raises(ValueError, match="scale"):
        ww.apply_task_vector(_pretrained(), {"b": torch.zeros(1)}, scale=float("nan"))


def test_task_vector_and_apply_do_not_mutate_or_alias_their_inputs():
    pretrained, finetuned = _pretrained(), _finetuned()
    vector = ww.task_vector(finetuned, pretrained)
    merged = ww.apply_task_vector(pretrained, vector)
    for tensor in merged.values():
        tensor.zero_()
    for name, tensor in _pretrained().items():
        assert torch.equal(pretrained[name], tensor)
    for name, tensor in _finetuned().items():
        assert torch.equal(finetuned[name], tensor)


def test_apply_task_vector_keeps_bf16_weights_in_bf16():
    pretrained = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}
    vector = {"w": torch.tensor([0.5, -1.0], dtype=torch.bfloat16)}
    merged = ww.apply_task_vector(pretrained, vector, scale=2.0)
    assert merged["w"].dtype == torch.bfloat16
    assert merged["w"].tolist() == [2.0, 0.0]
