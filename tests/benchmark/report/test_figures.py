"""PNG figures: λ curves, per-task best λ, cosine heatmaps — written, real images, drawn from the data."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from benchmark.report.figures import plot_best_lambda, plot_cosine_heatmap, plot_lambda_curves, write_figures
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from tests.benchmark.report.fixtures import paper_root, write_oracle, write_trial


def _image(path):
    assert path.exists() and path.stat().st_size > 5_000
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    return pixels


def test_lambda_curves_and_best_lambda_are_written_per_setup_and_model(tmp_path):
    table = results.read_results(paper_root(tmp_path))
    out = tmp_path / "figures"
    curves = plot_lambda_curves(table, out)
    assert [p.name for p in curves] == ["lambda_curves_m1_s1.png"]  # only m1/s1 has an oracle sweep
    pixels = _image(curves[0])
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    (best,) = plot_best_lambda(table, out)
    assert best.name == "best_lambda_m1.png"
    assert _image(best).shape[1] > 300
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_lambda_curve_figure_depends_on_the_weaving_results(tmp_path):
    """The weaving lines are drawn: changing only a weaving result changes the picture."""
    images = []
    for woven in (0.2, 0.9):
        storage = StorageRoot.at(tmp_path / f"r{woven}").ensure()
        write_oracle(storage, {0.5: {"a": 0.4}, 1.0: {"a": 0.6}, 1.5: {"a": 0.5}}, key="o")
        write_trial(storage, {"a": woven}, pooling="avg", key="w")
        (path,) = plot_lambda_curves(results.read_results(storage), tmp_path / f"f{woven}")
        images.append(_image(path))
    assert images[0].shape == images[1].shape
    assert np.abs(images[0] - images[1]).sum() > 0


def test_write_figures_without_an_oracle_sweep_explains_instead_of_failing(tmp_path):
    storage = StorageRoot.at(tmp_path / "root").ensure()
    write_trial(storage, {"a": 0.5}, pooling="avg")
    paths, notes = write_figures(results.read_results(storage), tmp_path / "figs")
    assert paths == [] and len(notes) == 1 and "oracle" in notes[0]
    paths, notes = write_figures(results.read_results(paper_root(tmp_path)), tmp_path / "figs2")
    assert sorted(p.name for p in paths) == ["best_lambda_m1.png", "lambda_curves_m1_s1.png"] and notes == []


def test_cosine_heatmap_draws_the_matrix(tmp_path):
    labels = ["digits", "shapes", "colours"]
    eye = plot_cosine_heatmap(np.eye(3), labels, tmp_path / "eye.png", "identity")
    full = plot_cosine_heatmap([[1, 0.9, -0.5], [0.9, 1, 0.2], [-0.5, 0.2, 1]], labels, tmp_path / "m.png", "m")
    a, b = _image(eye), _image(full)
    assert a.shape[0] > 200 and a.shape == b.shape
    assert np.abs(a - b).sum() > 0
    big = plot_cosine_heatmap(np.zeros((20, 20)), [f"t{i}" for i in range(20)], tmp_path / "big.png", "20 tasks")
    assert _image(big).shape[0] > a.shape[0]  # the figure grows with the number of tasks


def test_cosine_heatmap_rejects_a_non_square_matrix_or_wrong_labels(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plot_cosine_heatmap(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png", "x")
    with pytest.raises(ValueError, match="2 labels for a 3"):
        plot_cosine_heatmap(np.eye(3), ["a", "b"], tmp_path / "x.png", "x")
    assert not (tmp_path / "x.png").exists()
