"""The dataset registry's names, classes, prompts and splits, without any real data on disk."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data import MTL8, MTL14, MTL20, REAL_DATASETS, DatasetMissingError
from benchmark.data import loaders as data
from benchmark.data.layouts import hash_fraction
from benchmark.spec.schema import DataSpec
from benchmark.toy import TOY_TASKS


def test_every_dataset_of_the_three_setups_is_registered_under_its_methods_name():
    expected = {*MTL20, "ImageNet-R", "DomainNet", "PACS", "OfficeHome"}
    assert expected <= set(REAL_DATASETS)
    assert len(MTL8) == 8 and len(MTL14) == 14 and len(MTL20) == 20
    assert set(TOY_TASKS) <= set(data.dataset_names())


@pytest.mark.parametrize(
    "wrong, right",
    [("sun397", "SUN397"), ("cars", "Cars"), ("Eurosat", "EuroSAT"), ("domainnet", "DomainNet"), ("digitz", "digits")],
)
def test_dataset_names_are_case_sensitive_with_a_suggestion(wrong, right):
    with pytest.raises(ValueError, match=f"did you mean '{right}'"):
        data.check_dataset_name(wrong)


def test_class_counts_are_known_without_data_and_match_shipped_names():
    for name, info in REAL_DATASETS.items():
        shipped = info.shipped_classnames()
        if shipped is not None:
            assert len(shipped) == info.n_classes == data.n_classes(name), name
            assert len(set(shipped)) == len(shipped), f"{name} has duplicate class names"
    assert {n for n, i in REAL_DATASETS.items() if i.shipped_classnames() is None} == {
        "SUN397",
        "Cars",
        "DomainNet",
        "OfficeHome",
    }


def test_imagenet_r_names_come_from_installed_metadata():
    names = data.dataset_classnames("ImageNet-R")
    assert len(names) == 200 and names[0] == "goldfish"
    assert data.domains("ImageNet-R")[:2] == ("art", "cartoon") and len(data.domains("ImageNet-R")) == 15


def test_templates_are_format_strings_with_one_slot():
    for name in REAL_DATASETS:
        templates = data.templates(name)
        assert templates and all(t.count("{}") == 1 for t in templates), name
    assert len(data.templates("DomainNet")) == 80  # CLIP's ImageNet set


@pytest.mark.parametrize(
    "task",
    [
        "CIFAR100[19/20]",
        "CIFAR100[0/50]",
        "ImageNet-R[3/10]",
        "DomainNet/sketch",
        "ImageNet-R/cartoon",
        "OfficeHome/Real_World",
        "PACS/art_painting",
        "SUN397",
    ],
)
def test_real_task_strings_parse_without_data(task):
    data.check_task_name(task)


@pytest.mark.parametrize(
    "task, message",
    [
        ("CIFAR100[0/3]", "must divide"),
        ("DomainNet/photo", "no domain"),
        ("SUN397/indoor", "single-domain"),
        ("Cars[196/196]", "split index"),
    ],
)
def test_bad_real_task_strings_say_why(task, message):
    with pytest.raises(ValueError, match=message):
        data.check_task_name(task)


def test_cil_splits_of_a_real_dataset_partition_its_fixed_class_order():
    chunks = [data.task_classes(f"CIFAR100[{i}/20]") for i in range(20)]
    assert [c for chunk in chunks for c in chunk] == data.class_order("CIFAR100")
    assert data.class_order("CIFAR100") == data.class_order("CIFAR100")
    names = data.classnames("CIFAR100[3/20]")
    assert names == tuple(data.dataset_classnames("CIFAR100")[c] for c in chunks[3]) and len(names) == 5


def test_split_hash_is_pinned():
    # changing the hash would silently move images between train, validation and test everywhere
    assert abs(hash_fraction("a", "b") - 0.514479) < 1e-6
    assert abs(hash_fraction("train=True:7", data.VALIDATION_SALT) - 0.417833) < 1e-6


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    assert str(data.data_root()).endswith("data")
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    assert data.data_root() == tmp_path
    assert data.data_root(tmp_path / "x") == tmp_path / "x"


def test_missing_dataset_error_names_layouts_root_and_remedy(tmp_path):
    with pytest.raises(DatasetMissingError) as info:
        data.load_split("SUN397", "test", DataSpec(), root=tmp_path)
    text = str(info.value)
    assert "SUN397 not found under data root" in text and str(tmp_path) in text
    assert "sun397/train/<class>" in text and "SUN397/ClassName.txt" in text
    assert "data prepare SUN397" in text and "WW_DATA_ROOT" in text


def test_classnames_read_from_disk_fail_clearly_without_data(tmp_path):
    with pytest.raises(DatasetMissingError, match="Cars not found"):
        data.dataset_classnames("Cars", tmp_path)


def test_toy_splits_are_unchanged_and_deterministic():
    spec = DataSpec(n_train=40, n_test=30, seed=1)
    images, labels = data.load_split("digits", "test", spec)
    expected_images, expected_labels = TOY_TASKS["digits"].generate("test", 30, 1)
    assert np.array_equal(images, expected_images) and np.array_equal(labels, expected_labels)
    again, _ = data.load_split("digits", "test", spec)
    assert np.array_equal(images, again)


def test_toy_validation_is_disjoint_further_draws_of_the_train_stream():
    spec = DataSpec(n_train=50, n_test=10, seed=0)
    train, _ = data.load_split("shapes", "train", spec)
    validation, labels = data.load_split("shapes", "validation", spec)
    longer, _ = TOY_TASKS["shapes"].generate("train", 55, 0)
    assert len(validation) == 5 and np.array_equal(validation, longer[50:])
    assert not any(np.array_equal(v, t) for v in validation for t in train)


def test_toy_images_resize_to_another_models_resolution():
    images, _ = data.load_split("digits", "test", DataSpec(n_train=8, n_test=8), resolution=48)
    assert images.shape == (8, 3, 48, 48) and images.dtype == np.uint8


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_split("digits", "val", DataSpec())
