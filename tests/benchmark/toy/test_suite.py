"""The offline image suite: determinism, layout and vocabulary of tasks and pre-training pairs."""

import re

import numpy as np
import pytest

from benchmark.toy import TOY_IMAGE_SIZE, TOY_TASKS, ToyTask, pretraining_pairs, suite


@pytest.mark.parametrize("name", sorted(TOY_TASKS))
def test_generate_has_the_documented_layout(name):
    task = TOY_TASKS[name]
    images, labels = task.generate("test", 24, seed=0)
    assert images.shape == (24, 3, TOY_IMAGE_SIZE, TOY_IMAGE_SIZE)
    assert images.dtype == np.uint8
    assert labels.shape == (24,)
    assert labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(task.classnames)


@pytest.mark.parametrize("name", sorted(TOY_TASKS))
def test_same_seed_gives_identical_examples(name):
    task = TOY_TASKS[name]
    a_images, a_labels = task.generate("train", 12, seed=3)
    b_images, b_labels = task.generate("train", 12, seed=3)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)


@pytest.mark.parametrize("name", sorted(TOY_TASKS))
def test_splits_and_seeds_draw_different_examples(name):
    task = TOY_TASKS[name]
    train, _ = task.generate("train", 12, seed=0)
    test, _ = task.generate("test", 12, seed=0)
    other_seed, _ = task.generate("train", 12, seed=1)
    assert not np.array_equal(train, test)
    assert not np.array_equal(train, other_seed)
    # No single example is shared either: streams are independent per (split, seed, index).
    assert not any(np.array_equal(x, y) for x in train for y in test)


def test_example_does_not_depend_on_how_many_are_drawn():
    task = TOY_TASKS["shapes"]
    small, small_labels = task.generate("test", 5, seed=0)
    large, large_labels = task.generate("test", 20, seed=0)
    np.testing.assert_array_equal(small, large[:5])
    np.testing.assert_array_equal(small_labels, large_labels[:5])


def test_tasks_differ_from_each_other():
    first = {name: task.generate("test", 4, seed=0)[0] for name, task in TOY_TASKS.items()}
    names = sorted(first)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(first[a], first[b])


def test_at_least_six_tasks_with_unique_readable_class_names():
    assert len(TOY_TASKS) >= 6
    for name, task in TOY_TASKS.items():
        assert isinstance(task, ToyTask) and task.name == name
        assert len(task.classnames) >= 2
        assert len(set(task.classnames)) == len(task.classnames)
        assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", c) for c in task.classnames), task.classnames
        assert task.templates and all(t.count("{}") == 1 for t in task.templates)


def test_labels_cover_every_class():
    for task in TOY_TASKS.values():
        _, labels = task.generate("train", 300, seed=0)
        assert set(labels.tolist()) == set(range(len(task.classnames)))


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError):
        TOY_TASKS["digits"].generate("validation", 2, seed=0)


def test_test_digits_use_glyphs_the_train_split_never_sees():
    for label in range(10):
        train = set(suite._digit_pool("train", label).tolist())
        test = set(suite._digit_pool("test", label).tolist())
        assert train and test and not train & test


def test_pretraining_pairs_are_deterministic_and_well_formed():
    images, captions = pretraining_pairs(40, seed=0)
    again, again_captions = pretraining_pairs(40, seed=0)
    other, _ = pretraining_pairs(40, seed=1)
    assert images.shape == (40, 3, TOY_IMAGE_SIZE, TOY_IMAGE_SIZE) and images.dtype == np.uint8
    assert len(captions) == 40 and all(isinstance(c, str) and c for c in captions)
    np.testing.assert_array_equal(images, again)
    assert captions == again_captions
    assert not np.array_equal(images, other)


def test_pretraining_pairs_are_not_the_tasks_streams():
    pairs, _ = pretraining_pairs(16, seed=0)
    for task in TOY_TASKS.values():
        for split in ("train", "test"):
            images, _ = task.generate(split, 16, seed=0)
            assert not any(np.array_equal(x, y) for x in pairs for y in images)


def test_captions_name_the_tasks_concepts():
    """θ0 can only learn a class name it reads: every class name occurs in the captions."""
    _, captions = pretraining_pairs(3000, seed=0)
    text = " | ".join(captions)
    for task in TOY_TASKS.values():
        missing = [c for c in task.classnames if c not in text]
        assert not missing, (task.name, missing)


def test_the_multi_domain_task_renders_each_domain_differently_from_the_same_classes():
    task = TOY_TASKS["objects"]
    assert len(task.domains) >= 3 and task.classnames == TOY_TASKS["shapes"].classnames
    by_domain = {d: task.generate("test", 64, seed=0, domain=d) for d in task.domains}
    for domain, (images, labels) in by_domain.items():
        assert images.shape == (64, 3, TOY_IMAGE_SIZE, TOY_IMAGE_SIZE) and images.dtype == np.uint8
        assert set(labels.tolist()) <= set(range(task.num_classes))
    sketch, negative = by_domain["sketch"][0], by_domain["negative"][0]
    assert (sketch[:, 0] == sketch[:, 1]).all() and (sketch[:, 1] == sketch[:, 2]).all()  # strokes, no colour
    assert sketch.mean() > 150  # dark strokes on light paper
    assert not np.array_equal(by_domain["photo"][0], negative)
    # domains share classes, not examples: the label streams differ
    assert not np.array_equal(by_domain["photo"][1], by_domain["mosaic"][1])
    np.testing.assert_array_equal(task.generate("test", 64, seed=0)[0], by_domain["photo"][0])  # default domain


def test_an_unknown_domain_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="no domain 'clipart'.*photo"):
        TOY_TASKS["objects"].generate("test", 2, seed=0, domain="clipart")
    with pytest.raises(ValueError, match="domains: none"):
        TOY_TASKS["digits"].generate("test", 2, seed=0, domain="photo")


def test_toy_dg_setup_validates_and_plans_leave_one_domain_out():
    from benchmark.spec.schema import SetupSpec

    setup = SetupSpec(name="toy-dg", kind="dg", dataset="objects", domains=["photo", "sketch", "negative"])
    assert setup.expert_tasks() == ["objects/photo", "objects/sketch", "objects/negative"]
    held_out = {e.task: e.experts for e in setup.evaluations()}
    assert held_out == {"objects/photo": (1, 2), "objects/sketch": (0, 2), "objects/negative": (0, 1)}


@pytest.mark.parametrize("shift", sorted(name for name in suite.TASK_SHIFTS if name.startswith("scramble")))
def test_scramble_shift_is_a_patch_permutation_the_patch_embedding_can_undo(shift):
    """The tasks' sensor moves the same pixels in every 8x8 patch: a patch embedding whose kernel
    is permuted the same way sees the shifted image exactly as the original one sees the image."""
    import torch

    rng = np.random.default_rng(0)
    img = rng.random((TOY_IMAGE_SIZE, TOY_IMAGE_SIZE, 3), dtype=np.float32)
    shifted = suite.TASK_SHIFTS[shift](img)
    fraction = int(shift.removeprefix("scramble")) / 100
    assert np.isclose((shifted != img).any(axis=2).mean(), fraction, atol=1 / 64)
    np.testing.assert_array_equal(np.sort(shifted.reshape(-1, 3), axis=0), np.sort(img.reshape(-1, 3), axis=0))
    conv = torch.nn.Conv2d(3, 5, kernel_size=8, stride=8, bias=False)
    first_tile = suite._tile_permutation(fraction).reshape(TOY_IMAGE_SIZE, TOY_IMAGE_SIZE)[:8, :8].reshape(-1)
    within = (first_tile // TOY_IMAGE_SIZE) * 8 + first_tile % TOY_IMAGE_SIZE  # shifted pixel j = original within[j]
    undone = torch.empty_like(conv.weight).flatten(2)
    undone[:, :, torch.from_numpy(within)] = conv.weight.detach().flatten(2)

    def as_tensor(x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]

    with torch.no_grad():
        expected = torch.nn.functional.conv2d(as_tensor(img), undone.reshape(conv.weight.shape), stride=8)
        torch.testing.assert_close(conv(as_tensor(shifted)), expected)


def test_the_sensor_shift_applies_to_single_domain_tasks_only(monkeypatch):
    monkeypatch.setattr(suite, "TASK_SHIFT", "none")
    plain = {name: TOY_TASKS[name].generate("test", 4, seed=0)[0] for name in ("digits", "objects")}
    plain_pairs = pretraining_pairs(4, seed=0)[0]
    monkeypatch.setattr(suite, "TASK_SHIFT", "scramble50")
    assert not np.array_equal(TOY_TASKS["digits"].generate("test", 4, seed=0)[0], plain["digits"])
    np.testing.assert_array_equal(TOY_TASKS["objects"].generate("test", 4, seed=0)[0], plain["objects"])
    np.testing.assert_array_equal(pretraining_pairs(4, seed=0)[0], plain_pairs)
