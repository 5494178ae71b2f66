"""The eval tensor cache and the zero-shot head cache on real-dataset layouts (written in fake)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import open_clip
import pytest
import torch

from benchmark.data import fake
from benchmark.data import images as image_module
from benchmark.data import loaders as data
from benchmark.model import head_cache
from benchmark.model.pretrained import LoadedModel
from benchmark.results.storage import StorageRoot
from benchmark.spec.keys import content_key, revision
from benchmark.spec.schema import DataSpec
from benchmark.trials import eval_cache


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fake.write_fake("EuroSAT", root, per_class=4)
    fake.write_fake("PACS", root)
    return root


def _no_decoding(*args, **kwargs):
    raise AssertionError("a cached split must not be decoded again")


def test_real_split_is_decoded_once_into_a_memory_map(data_root, tmp_path, monkeypatch):
    storage = StorageRoot.at(tmp_path / "root")
    images, labels = eval_cache.load_split(storage, "EuroSAT", "test", DataSpec(), resolution=24, root=data_root)
    assert isinstance(images, np.memmap) and images.dtype == np.uint8 and images.shape == (40, 3, 24, 24)
    assert np.array_equal(fake.colour_label(images[:, 0, 12, 12], images[:, 1, 12, 12]), labels)
    folder = eval_cache.cache_folder(storage, "EuroSAT", "test", DataSpec(), 24)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n"] == 40 and meta["resolution"] == 24 and meta["layout"] == "SplitFoldersLayout"

    monkeypatch.setattr(image_module, "decode_batches", _no_decoding)
    # real splits ignore DataSpec sizes, and moving the data root does not invalidate the cache
    moved = tmp_path / "moved"
    shutil.copytree(data_root, moved)
    again, again_labels = eval_cache.load_split(
        storage, "EuroSAT", "test", DataSpec(n_test=5, seed=3), resolution=24, root=moved
    )
    assert np.array_equal(again, images) and np.array_equal(again_labels, labels)


def test_cache_entries_are_keyed_by_resolution_and_split(data_root, tmp_path):
    storage = StorageRoot.at(tmp_path)
    folders = {
        eval_cache.cache_folder(storage, "EuroSAT", split, DataSpec(), size)
        for split in ("train", "validation", "test")
        for size in (224, 336)
    }
    assert len(folders) == 6
    assert eval_cache.cache_folder(storage, "EuroSAT", "test", DataSpec(), None) == eval_cache.cache_folder(
        storage, "EuroSAT", "test", DataSpec(), 224
    )
    assert "-224px-" in eval_cache.cache_folder(storage, "EuroSAT", "test", DataSpec()).name


def test_toy_cache_keys_are_unchanged(tmp_path):
    storage = StorageRoot.at(tmp_path)
    spec = DataSpec(n_train=16, n_test=8)
    # (task, split, DataSpec) and the toy suite's revision; the native 32 px adds nothing
    key = content_key(
        "eval-tensors",
        {"dataset": "digits", "split": "test", "data": spec, "revision": {"toy_data": revision("toy_data")}},
    )
    assert eval_cache.cache_folder(storage, "digits", "test", spec).name == f"digits-test-{key}"
    assert eval_cache.cache_folder(storage, "digits", "test", spec, 32).name == f"digits-test-{key}"
    images, _ = eval_cache.load_split(storage, "digits", "test", spec)
    assert images.shape == (8, 3, 32, 32)
    resized, _ = eval_cache.load_split(storage, "digits", "test", spec, resolution=48)
    assert resized.shape == (8, 3, 48, 48)


@pytest.fixture(scope="module")
def tiny_base():
    fake.register_tiny_clip()
    torch.manual_seed(0)
    model = open_clip.create_model(fake.TINY_CLIP, pretrained=None).eval()
    return LoadedModel(model, open_clip.get_tokenizer(fake.TINY_CLIP), key="tiny-base")


def test_heads_have_one_unit_row_per_class_and_are_cached(tiny_base, tmp_path, monkeypatch):
    storage = StorageRoot.at(tmp_path)
    head = head_cache.load_head(storage, tiny_base, "EuroSAT")
    assert head.shape == (10, 32)
    assert torch.allclose(head.norm(dim=-1), torch.ones(10), atol=1e-5)
    assert head_cache.head_path(storage, "tiny-base", "EuroSAT").is_file()
    monkeypatch.setattr(head_cache, "zeroshot_head", _no_decoding)
    assert torch.equal(head_cache.load_head(storage, tiny_base, "EuroSAT"), head)


def test_dg_domains_share_a_head_and_cil_splits_have_their_own(tiny_base, tmp_path):
    storage = StorageRoot.at(tmp_path)
    paths = {head_cache.head_path(storage, "tiny-base", f"PACS/{d}") for d in data.domains("PACS")}
    assert len(paths) == 1 and next(iter(paths)).name.startswith("PACS-")
    joint = head_cache.load_head(storage, tiny_base, "CIFAR100")
    split = head_cache.load_head(storage, tiny_base, "CIFAR100[4/20]")
    assert joint.shape == (100, 32) and split.shape == (5, 32)
    assert torch.allclose(split, joint[data.task_classes("CIFAR100[4/20]")], atol=1e-5)
    assert head_cache.head_path(storage, "other-base", "CIFAR100") != head_cache.head_path(
        storage, "tiny-base", "CIFAR100"
    )
