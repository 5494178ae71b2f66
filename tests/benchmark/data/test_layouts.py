"""Every on-disk layout the registry accepts, written in fake and read back through the real registry.

Each fake image's colour encodes its label (``benchmark.data.fake``), so these tests check that
labels survive the layout, the split logic and the decoding — not only that files are found.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from benchmark.data import REAL_DATASETS, DatasetMalformedError, fake
from benchmark.data import loaders as data
from benchmark.spec.schema import DataSpec

CASES = [(name, layout) for name, writers in fake.WRITERS.items() for layout in writers]
GREY = {"MNIST", "FashionMNIST", "KMNIST", "EMNIST", "FER2013"}
# a few images per class so that the ≈10 % validation split is not empty
PER_CLASS = {
    "MNIST": 5,
    "FashionMNIST": 5,
    "KMNIST": 5,
    "EMNIST": 5,
    "SVHN": 5,
    "STL10": 5,
    "CIFAR10": 5,
    "FER2013": 5,
    "RenderedSST2": 10,
    "EuroSAT": 5,
    "PCAM": 10,
}


@pytest.fixture(autouse=True)
def _fake_md5():
    with fake.skip_torchvision_md5():
        yield


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    """One data root per (dataset, layout), written once for the module."""
    roots = {}
    for name, layout in CASES:
        if name == "PCAM" and importlib.util.find_spec("h5py") is None:
            continue
        root = tmp_path_factory.mktemp(f"{name}-{layout}")
        kwargs = {"per_class": PER_CLASS[name]} if name in PER_CLASS else {}
        fake.write_fake(name, root, layout, **kwargs)
        roots[name, layout] = root
    return roots


def _first_task(name: str) -> str:
    domains = data.domains(name)
    return f"{name}/{domains[0]}" if domains else name


def _decoded_label(images: np.ndarray, grey: bool) -> np.ndarray:
    centre = images[:, :, images.shape[2] // 2, images.shape[3] // 2].astype(np.int64)
    if grey:
        return np.round(centre[:, 0] / 20).astype(np.int64)
    return fake.colour_label(centre[:, 0], centre[:, 1])


@pytest.mark.parametrize("name, layout", CASES)
def test_fake_layout_is_found_named_split_and_labelled(fakes, name, layout):
    if (name, layout) not in fakes:
        pytest.skip("h5py is not installed (PCAM's format needs it)")
    root = fakes[name, layout]
    assert data.find_layout(name, root) is not None
    assert len(data.dataset_classnames(name, root)) == REAL_DATASETS[name].n_classes
    task = _first_task(name)
    train, validation, test = (data.open_split(task, s, root) for s in ("train", "validation", "test"))
    assert len(train) and len(validation) and len(test)
    assert not set(train.keys) & set(validation.keys), "validation must be held out of train"
    assert not set(train.keys) & set(test.keys)
    for split in (train, validation, test):
        assert split.labels.min() >= 0 and split.labels.max() < REAL_DATASETS[name].n_classes
    images, labels = data.load_split(task, "test", DataSpec(), resolution=16, root=root)
    assert images.shape == (len(test), 3, 16, 16) and images.dtype == np.uint8
    assert np.array_equal(_decoded_label(images, name in GREY), labels), "labels must match the images' content"


def test_validation_is_about_a_tenth_of_the_official_train_split(tmp_path):
    fake.write_fake("CIFAR10", tmp_path, per_class=60)
    with fake.skip_torchvision_md5():
        train = data.open_split("CIFAR10", "train", tmp_path)
        validation = data.open_split("CIFAR10", "validation", tmp_path)
    assert len(train) + len(validation) == 5 * 600
    assert 0.07 < len(validation) / 3000 < 0.13


def test_class_incremental_split_keeps_its_classes_relabelled_and_agrees_with_the_whole(fakes):
    root = fakes["CIFAR100", "torchvision"]
    whole = data.open_split("CIFAR100", "validation", root)
    part = data.open_split("CIFAR100[2/20]", "validation", root)
    classes = data.task_classes("CIFAR100[2/20]")
    assert set(part.labels) <= set(range(5))
    expected = {k for k, label in zip(whole.keys, whole.labels) if label in classes}
    assert set(part.keys) == expected, "the subset of a split must be the split of the subset"
    images, labels = data.load_split("CIFAR100[2/20]", "test", DataSpec(), resolution=8, root=root)
    assert np.array_equal(np.asarray(classes)[labels], _decoded_label(images, False))


@pytest.mark.parametrize("name", ["DomainNet", "PACS", "OfficeHome", "ImageNet-R"])
def test_domains_partition_the_multi_domain_dataset(fakes, name):
    root = fakes[name, next(iter(fake.WRITERS[name]))]
    whole = set(data.open_split(name, "test", root).keys)
    parts = [
        set(data.open_split(f"{name}/{d}", "test", root).keys)
        for d in data.domains(name)
        if name != "ImageNet-R" or d in ("art", "cartoon", "sketch")
    ]
    assert set().union(*parts) == whole and sum(len(p) for p in parts) == len(whole)


def test_disk_class_names_follow_each_layout(fakes):
    assert data.dataset_classnames("SUN397", fakes["SUN397", "folders"])[0] == "fake scene 000"
    assert data.dataset_classnames("SUN397", fakes["SUN397", "partitions"])[0] == "fake scene 000"
    assert data.dataset_classnames("Cars", fakes["Cars", "torchvision"])[5] == "Fake Make Model 005 2012"
    assert data.dataset_classnames("DomainNet", fakes["DomainNet", "lists"])[7] == "fake class 007"
    assert data.dataset_classnames("OfficeHome", fakes["OfficeHome", "folders"])[1] == "fake object 01"


def test_unexpected_class_folder_is_malformed_naming_it(tmp_path):
    fake.write_fake("DTD", tmp_path, "folders")
    (tmp_path / "dtd" / "train" / "banded").rename(tmp_path / "dtd" / "train" / "bandd")
    with pytest.raises(DatasetMalformedError, match="bandd"):
        data.open_split("DTD", "train", tmp_path)


def test_incomplete_layout_is_malformed_with_a_fix(tmp_path):
    fake.write_fake("RESISC45", tmp_path)
    (tmp_path / "resisc45" / "resisc45-test.txt").unlink()
    with pytest.raises(DatasetMalformedError, match="split lists missing: resisc45-test.txt"):
        data.find_layout("RESISC45", tmp_path)
