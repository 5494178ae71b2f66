"""ww.TaskVectorBank: flat [T, P] stacking, layout, round trips and validation."""

import warnings

import pytest
import torch

import ww


def _two_task_vectors():
    first = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([5.0])}
    second = {"w": torch.tensor([[-1.0, -2.0], [-3.0, -4.0]]), "b": torch.tensor([-5.0])}
    return first, second


def test_from_state_dicts_stacks_rows_in_layout_order():
    bank = ww.TaskVectorBank.from_state_dicts(list(_two_task_vectors()))
    assert bank.data.tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, -2.0, -3.0, -4.0, -5.0]]
    assert bank.layout == (("w", (2, 2)), ("b", (1,)))
    assert bank.task_names == ("task_0", "task_1")
    assert len(bank) == 2
    assert bank.num_params == 5
    assert bank.slices() == {"w": slice(0, 4), "b": slice(4, 5)}


def test_state_dict_round_trips_each_task_by_index_or_name():
    first, second = _two_task_vectors()
    bank = ww.TaskVectorBank.from_state_dicts({"cars": first, "dtd": second})
    assert bank.task_names == ("cars", "dtd")
    for task, expected in [(0, first), ("dtd", second)]:
        restored = bank.state_dict(task)
        assert list(restored) == list(expected)
        for name in expected:
            assert torch.equal(restored[name], expected[name])


def test_unflatten_returns_views_shaped_by_the_layout():
    bank = ww.TaskVectorBank.from_state_dicts([{"s": torch.tensor(3.0), "m": torch.ones(2, 3)}])
    flat = torch.arange(7.0)
    out = bank.unflatten(flat)
    assert out["s"].shape == () and out["s"].item() == 0.0
    assert out["m"].tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert out["m"].data_ptr() == flat.data_ptr() + 1 * flat.element_size()
    with pytest.raises(ValueError, match="7 entries"):
        bank.unflatten(torch.zeros(6))


def test_from_flat_wraps_without_copying():
    data = torch.arange(10.0).reshape(2, 5)
    bank = ww.TaskVectorBank.from_flat(data, [("w", (2, 2)), ("b", [1])], task_names=["x", "y"])
    assert bank.data is data
    assert bank.layout == (("w", (2, 2)), ("b", (1,)))
    assert bank.state_dict("y")["b"].tolist() == [9.0]


def test_from_flat_accepts_a_read_only_numpy_buffer_and_never_writes_to_it():
    np = pytest.importorskip("numpy")
    array = np.array([[1.0, -2.0, 3.0, 0.5], [2.0, 1.0, -4.0, 0.25]], dtype=np.float32)
    array.flags.writeable = False
    expected = array.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = torch.from_numpy(array)
    bank = ww.TaskVectorBank.from_flat(data, [("w", (2, 2))])
    for name in ww.MERGERS:
        ww.merge(name, bank)
    for pooling in list(ww.POOLINGS) + ["ties"]:
        for collaborative in (True, False):
            ww.weave(bank, "ties", pooling=pooling, collaborative=collaborative, lambdas=[0.5, 1.0])
    assert (array == expected).all()


@pytest.mark.parametrize(
    "second, message",
    [
        ({"w": torch.zeros(2, 2)}, "lacks tensor 'b'"),
        ({"w": torch.zeros(2, 2), "b": torch.zeros(1), "extra": torch.zeros(1)}, "has tensor 'extra'"),
        ({"w": torch.zeros(4), "b": torch.zeros(1)}, "'w' has shape"),
        ({"w": torch.zeros(2, 2, dtype=torch.float64), "b": torch.zeros(1, dtype=torch.float64)}, "dtype"),
        ({"w": torch.zeros(2, 2), "b": torch.zeros(1, dtype=torch.int64)}, "'b' is not a float"),
    ],
)
def test_from_state_dicts_rejects_inconsistent_task_vectors(second, message):
    first, _ = _two_task_vectors()
    with pytest.raises(ValueError, match=message):
        ww.TaskVectorBank.from_state_dicts([first, second])


def test_bank_construction_rejects_empty_mixed_dtype_and_mismatched_inputs():
    with pytest.raises(ValueError, match="at least one"):
        ww.TaskVectorBank.from_state_dicts([])
    with pytest.raises(ValueError, match="mixes dtypes"):
        ww.TaskVectorBank.from_state_dicts([{"a": torch.zeros(1), "b": torch.zeros(1, dtype=torch.float16)}])
    with pytest.raises(ValueError, match="layout describes 4"):
        ww.TaskVectorBank.from_flat(torch.zeros(2, 5), [("w", (2, 2))])
    with pytest.raises(ValueError, match="at least one"):
        ww.TaskVectorBank.from_flat(torch.zeros(0, 4), [("w", (2, 2))])
    with pytest.raises(ValueError, match="floating point"):
        ww.TaskVectorBank.from_flat(torch.zeros(1, 4, dtype=torch.int32), [("w", (2, 2))])
    with pytest.raises(ValueError, match="3 task names for 2"):
        ww.TaskVectorBank.from_flat(torch.zeros(2, 4), [("w", (2, 2))], task_names=["a", "b", "c"])


def test_a_single_state_dict_is_rejected_with_a_hint():
    first, _ = _two_task_vectors()
    with pytest.raises(ValueError, match="single state dict"):
        ww.merge("task_arithmetic", first)
