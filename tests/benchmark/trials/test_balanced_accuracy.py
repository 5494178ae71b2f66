"""DG's balanced accuracy (docs/METHODS.md §3: mean per-class recall), computed by the evaluation for every
trial row and shown by the leaderboard for DG setups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.report.leaderboard import leaderboard_rows, leaderboard_table
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from benchmark.trials.evaluation import balanced_accuracy, evaluate
from tests.benchmark.report.fixtures import write_trial


def test_balanced_accuracy_is_the_mean_per_class_recall():
    # class 0: 3 of 4 right; class 1: 1 of 2; class 7: 0 of 1 → (0.75 + 0.5 + 0) / 3, not 4/7
    correct = [True, True, False, True, False, True, False]
    labels = [0, 0, 0, 0, 1, 1, 7]
    assert balanced_accuracy(np.array(correct), np.array(labels)) == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert balanced_accuracy(np.ones(5, bool), np.array([3, 3, 3, 3, 1])) == 1.0
    with pytest.raises(ValueError, match="3 outcomes but 2 labels"):
        balanced_accuracy(np.ones(3, bool), np.array([0, 1]))


class _PixelCLIP(torch.nn.Module):
    """A stand-in CLIP whose feature is the one-hot of an image's first pixel value (0, 1 or 2)."""

    def __init__(self):
        super().__init__()
        self.visual = torch.nn.Linear(1, 1)
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))

    def encode_image(self, x):
        first = (x[:, 0, 0, 0] + 1).round().long().clamp(0, 2)  # pixels 0/128/255 normalise to -1/0/1
        return torch.nn.functional.one_hot(first, 3).float()


def test_evaluate_returns_each_examples_outcome_in_order_across_batches():
    values = np.array([0, 1, 2, 2, 1, 0, 0], dtype=np.uint8)
    images = np.zeros((len(values), 3, 2, 2), dtype=np.uint8)
    images[:, :, :, :] = (values * 127.5).round().astype(np.uint8)[:, None, None, None]
    model = _PixelCLIP()
    model.visual.preprocess_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    labels = np.array([0, 1, 1, 2, 1, 2, 0])
    assert "correct" not in evaluate(model, torch.eye(3), images, labels)  # plain numbers unless asked
    result = evaluate(model, torch.eye(3), images, labels, batch_size=3, outcomes=True)
    assert result["correct"].tolist() == [True, True, False, True, True, False, True]
    assert result["n_correct"] == 5 and result["accuracy"] == pytest.approx(5 / 7)
    # per class: 0 → 2/2, 1 → 2/3, 2 → 1/2
    assert balanced_accuracy(result["correct"], labels) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)


def test_the_leaderboard_shows_balanced_accuracy_for_dg(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    write_trial(storage, {"a": 0.6, "b": 0.8}, setup="dg", setup_kind="dg", balanced_accuracy=0.5, seed=0)
    write_trial(storage, {"a": 0.6, "b": 0.8}, setup="dg", setup_kind="dg", balanced_accuracy=0.3, seed=1)
    table = results.read_results(storage)
    (row,) = leaderboard_rows(table)
    assert row["balanced"] == pytest.approx(0.4) and row["accuracy"] == pytest.approx(0.7)
    report = leaderboard_table(table)
    assert report.columns[-1].label == "balanced %"
    assert report.rows[0][-1].mean == pytest.approx(0.4) and report.rows[0][-1].std == pytest.approx(0.1414, abs=1e-4)
    mtl = StorageRoot.at(tmp_path / "mtl").ensure()
    write_trial(mtl, {"a": 0.6}, balanced_accuracy=0.5)
    assert "balanced %" not in [c.label for c in leaderboard_table(results.read_results(mtl)).columns]
