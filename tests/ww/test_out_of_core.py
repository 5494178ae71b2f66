"""Out-of-core banks: written one task vector at a time, memory-mapped, merged with the same results."""

import warnings

import pytest
import torch

import ww
from ww.engine.bank_file import BankWriter

LAYOUT = {"conv": (4, 3, 2, 2), "w": (12, 8), "b": (8,), "s": (), "proj": (8, 5)}


def _taus(tasks=4, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return {
        f"task{t}": {name: torch.randn(shape, generator=generator).to(dtype) for name, shape in LAYOUT.items()}
        for t in range(tasks)
    }


def _equal(first, second):
    return list(first) == list(second) and all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_a_saved_bank_opens_as_the_same_bank(tmp_path, dtype):
    taus = _taus(dtype=dtype)
    path = ww.save_bank(tmp_path / "bank.safetensors", taus)
    bank = ww.open_bank(path)
    memory = ww.TaskVectorBank.from_state_dicts(taus)
    assert bank.file_backed and not memory.file_backed
    assert bank.layout == memory.layout and bank.task_names == ("task0", "task1", "task2", "task3")
    assert bank.data.dtype == dtype and torch.equal(bank.data, memory.data)


def test_the_bank_file_is_a_safetensors_file(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    taus = _taus()
    path = ww.save_bank(tmp_path / "bank.safetensors", taus)
    with safetensors.safe_open(str(path), framework="pt") as handle:
        data = handle.get_tensor("task_vectors")
        metadata = handle.metadata()
    assert torch.equal(data, ww.TaskVectorBank.from_state_dicts(taus).data)
    assert metadata["format"].startswith("ww-task-vector-bank")


@pytest.mark.parametrize("name", sorted(ww.MERGERS))
def test_every_merger_gives_the_same_result_out_of_core(tmp_path, name):
    taus = _taus()
    path = ww.save_bank(tmp_path / "bank.safetensors", taus)
    memory = ww.TaskVectorBank.from_state_dicts(taus)
    mapped = ww.open_bank(path)
    record = ww.MERGERS[name]
    for block_entries in (None, 24):
        in_memory = record.run(memory.stream(block_entries=block_entries, workers=2))
        out_of_core = record.run(mapped.stream(block_entries=block_entries, workers=2))
        assert torch.equal(in_memory, out_of_core)
    assert _equal(ww.merge(name, memory), ww.merge(name, mapped))


@pytest.mark.parametrize("pooling", ["avg", "randmix", "magmax", "ties"])
@pytest.mark.parametrize("merger", ["task_arithmetic", "ties", "tsv_m", "breadcrumbs"])
def test_weaving_gives_the_same_result_out_of_core(tmp_path, merger, pooling):
    taus = _taus()
    mapped = ww.open_bank(ww.save_bank(tmp_path / "bank.safetensors", taus))
    for collaborative in (True, False):
        arguments = {"merger": merger, "pooling": pooling, "collaborative": collaborative, "seed": 3}
        assert _equal(ww.weave(taus, **arguments), ww.weave(mapped, **arguments))


def test_merged_blocks_are_released_in_order_and_cover_the_bank(tmp_path):
    mapped = ww.open_bank(ww.save_bank(tmp_path / "bank.safetensors", _taus()))
    calls = []
    release = mapped._release
    object.__setattr__(mapped, "_release", lambda start, stop: calls.append((start, stop)) or release(start, stop))
    ww.MERGERS["ties"].run(mapped.stream(block_entries=40, workers=2))
    passes = [[]]
    for call in calls:  # a pass ends where the next starts again from the beginning
        if passes[-1] and call[0] < passes[-1][-1][0]:
            passes.append([])
        passes[-1].append(call)
    assert len(passes) == 2  # TIES: the threshold selection, then the merge
    for calls_of_pass in passes:
        assert [start for start, _ in calls_of_pass[1:]] == [stop for _, stop in calls_of_pass[:-1]]
        assert calls_of_pass[0][0] == 0 and calls_of_pass[-1][1] == mapped.num_params


def test_a_numpy_memmap_works_through_from_flat(tmp_path):
    numpy = pytest.importorskip("numpy")
    memory = ww.TaskVectorBank.from_state_dicts(_taus())
    array = numpy.lib.format.open_memmap(
        tmp_path / "bank.npy", mode="w+", dtype=numpy.float32, shape=tuple(memory.data.shape)
    )
    array[:] = memory.data.numpy()
    array.flush()
    readonly = numpy.load(tmp_path / "bank.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mapped = ww.TaskVectorBank.from_flat(torch.from_numpy(readonly), memory.layout, memory.task_names)
    assert _equal(ww.merge("pcb", memory), ww.merge("pcb", mapped))
    assert _equal(ww.weave(memory, "ties", pooling="randmix"), ww.weave(mapped, "ties", pooling="randmix"))


def test_writer_streams_rows_and_refuses_incomplete_or_inconsistent_banks(tmp_path):
    taus = list(_taus(tasks=2).values())
    layout = [(name, tuple(value.shape)) for name, value in taus[0].items()]
    path = tmp_path / "bank.safetensors"
    with BankWriter(path, layout, ["a", "b"]) as writer:
        writer.add(taus[0])
        writer.add(ww.TaskVectorBank.from_state_dicts([taus[1]]).data[0])  # a flat row works too
    assert torch.equal(ww.open_bank(path).data, ww.TaskVectorBank.from_state_dicts(taus).data)

    partial = tmp_path / "partial.safetensors"
    with pytest.raises(ValueError, match="wrote .* of .* entries"):
        with BankWriter(partial, layout, ["a", "b"]) as writer:
            writer.add(taus[0])
    assert not partial.exists() and not list(tmp_path.glob("partial*"))
    with pytest.raises(ValueError, match="dtype"):
        with BankWriter(partial, layout, ["a"]) as writer:
            writer.add({key: value.double() for key, value in taus[0].items()})
    with pytest.raises(ValueError, match="writing past the end"):
        with BankWriter(partial, layout, ["a"]) as writer:
            writer.write(torch.zeros(10_000))
    with pytest.raises(ValueError, match="lacks tensor 'w'"):
        with BankWriter(partial, layout, ["a"]) as writer:
            writer.add({key: value for key, value in taus[0].items() if key != "w"})
    assert not partial.exists()


def test_open_bank_rejects_other_files(tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="not a ww task-vector bank"):
        ww.open_bank(other)
    short = tmp_path / "short.bin"
    short.write_bytes(b"\x01")
    with pytest.raises(ValueError, match="too short"):
        ww.open_bank(short)
    truncated = tmp_path / "truncated.safetensors"
    data = ww.save_bank(tmp_path / "bank.safetensors", _taus()).read_bytes()
    truncated.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        ww.open_bank(truncated)
