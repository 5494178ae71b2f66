"""Fakes of datasets torchvision checks by MD5 are readable as they are, from any command.

torchvision refuses a file whose MD5 sum differs from the official one, which no fake can match;
the fakes mark their folder instead and the registry skips the check there only. Real data (no
marker) keep the check, and the check is back in place after a fake was read.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data import DatasetMalformedError, fake
from benchmark.data import loaders as data
from benchmark.data.layouts import FAKE_MARKER


def _labels_from_colour(images: np.ndarray) -> np.ndarray:
    centre = images[:, :, images.shape[2] // 2, images.shape[3] // 2].astype(np.int64)
    return fake.colour_label(centre[:, 0], centre[:, 1])


@pytest.mark.parametrize("dataset, folder", [("SVHN", "svhn"), ("CIFAR100", "cifar-100-python")])
def test_marked_fake_is_read_without_md5_and_the_check_comes_back(tmp_path, monkeypatch, dataset, folder):
    from torchvision.datasets import svhn, utils

    fake.write_fake(dataset, tmp_path)
    assert (tmp_path / folder / FAKE_MARKER).is_file()
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    images, labels = data.load_split(dataset, "test", None, resolution=32)
    assert len(labels) and np.array_equal(_labels_from_colour(images), labels)
    assert svhn.check_integrity is utils.check_integrity  # restored: nothing stays patched
    assert utils.check_integrity.__module__ == "torchvision.datasets.utils"


def test_unmarked_copy_keeps_torchvisions_md5_check(tmp_path, monkeypatch):
    fake.write_fake("SVHN", tmp_path)
    (tmp_path / "svhn" / FAKE_MARKER).unlink()  # what a corrupted real download looks like
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    with pytest.raises(DatasetMalformedError, match="corrupted"):
        data.open_split("SVHN", "test")


def test_nested_skips_restore_the_check_only_when_the_last_one_leaves():
    from torchvision.datasets import utils

    original = utils.check_integrity
    with fake.skip_torchvision_md5():
        with fake.skip_torchvision_md5():
            assert utils.check_integrity is not original
        assert utils.check_integrity is not original
    assert utils.check_integrity is original


@pytest.mark.parametrize("dataset", ["Cars", "Flowers102"])
def test_a_single_test_image_still_reads_back(tmp_path, monkeypatch, dataset):
    fake.write_fake(dataset, tmp_path, test_images=1)  # two, in fact: one MATLAB record reads back as a scalar
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    assert len(set(data.open_split(dataset, "test").labels.tolist())) == 2


@pytest.mark.parametrize(
    "dataset, layout, n_classes",
    [
        ("SUN397", "partitions", 397),
        ("Cars", "torchvision", 196),
        ("RESISC45", "lists", 45),
        ("GTSRB", "torchvision", 43),
        ("DTD", "torchvision", 47),
        ("CIFAR100", "torchvision", 100),
        ("Food101", None, 101),
        ("Flowers102", None, 102),
        ("OxfordIIITPet", None, 37),
        ("MNIST", None, 10),
        ("SVHN", None, 10),
        ("EMNIST", None, 10),
    ],
)
def test_test_images_caps_the_test_split_but_not_the_classes(tmp_path, monkeypatch, dataset, layout, n_classes):
    fake.write_fake(dataset, tmp_path, layout, test_images=12)
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    test = data.open_split(dataset, "test")
    assert len(test) == 12
    # spread over the classes (writers with two images per class: six classes)
    assert len(set(test.labels.tolist())) in (6, 12) and test.labels.max() > n_classes // 2
    assert len(data.classnames(dataset)) == n_classes
    assert len(set(data.open_split(dataset, "train").labels.tolist())) > min(12, n_classes // 2)  # train: not capped
