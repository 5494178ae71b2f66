"""The output-space analysis compares the soup with ensembles that can differ from the logit
ensemble: probabilities and raw (unnormalised) features. Checked on constructed outputs where each
disagrees with the reference, without a model or Ray; labels of figures and tables follow."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from benchmark.analyze.output_space import LABELS, METHODS, PAIRS, Ensembles, plot, summary_table

HEAD = torch.eye(3)  # class c's zero-shot weight is the unit vector e_c
SCALE = torch.tensor(100.0)  # CLIP's logit scale


def _members() -> list[torch.Tensor]:
    """Three experts' raw features on two examples.

    Example 0: expert 1 is extremely sure of class 0 (margin 141 logits), experts 2-3 mildly prefer
    class 1 — mean logits say 0, mean probabilities say 1 (a saturated softmax counts once).
    Example 1: expert 1 has a 100× larger feature norm and points to class 0, experts 2-3 to class 1
    — mean normalised outputs say 1, the mean raw feature says 0 (its norm dominates).
    """
    e1 = torch.tensor([[1.0, -1.0, 0.0], [100.0, 20.0, 0.0]])
    e2 = torch.tensor([[0.5, 0.6, 0.0], [0.2, 1.0, 0.0]])
    return [e1, e2, e2.clone()]


def test_probability_and_raw_feature_ensembles_disagree_with_the_logit_ensemble_where_they_should():
    ensembles = Ensembles(HEAD, SCALE)
    for features in _members():
        ensembles.add(features)
    scores = ensembles.scores()
    predictions = {method: scores[method].argmax(dim=-1).tolist() for method in scores}
    assert predictions == {"logit_ensemble": [0, 1], "prob_ensemble": [1, 1], "feature_ensemble": [0, 0]}
    # the reference, computed directly
    direct = torch.stack([SCALE * F.normalize(f, dim=-1) @ HEAD.T for f in _members()]).mean(0)
    assert torch.allclose(scores["logit_ensemble"], direct)


def test_the_mean_of_normalised_features_could_never_differ_from_the_logit_ensemble():
    """Why the old "feature ensemble" was dropped: re-normalising the mean of normalised features
    rescales each example's mean logits by a positive factor, so the argmax is the same."""
    generator = torch.Generator().manual_seed(0)
    head = F.normalize(torch.randn(7, 16, generator=generator), dim=-1)
    members = [
        torch.randn(500, 16, generator=generator) * torch.rand(500, 1, generator=generator) * 10 for _ in range(4)
    ]
    ensembles = Ensembles(head, SCALE)
    for features in members:
        ensembles.add(features)
    normalised_mean = F.normalize(torch.stack([F.normalize(f, dim=-1) for f in members]).mean(0), dim=-1) @ head.T
    assert torch.equal(normalised_mean.argmax(-1), ensembles.scores()["logit_ensemble"].argmax(-1))
    assert not torch.equal(
        ensembles.scores()["feature_ensemble"].argmax(-1), ensembles.scores()["logit_ensemble"].argmax(-1)
    )


def test_figure_and_table_name_the_compared_ensembles():
    accuracy = [{"n_models": n, "method": m, "accuracy": 0.5, "eval_task": "a"} for n in (1, 2) for m in METHODS]
    agreement = [
        {"n_models": n, "method_a": a, "method_b": b, "agreement": 0.9, "eval_task": "a"}
        for n in (1, 2)
        for a, b in PAIRS
    ]
    ref = SimpleNamespace(model=SimpleNamespace(name="toy"), setup=SimpleNamespace(name="mtl"), seed=0)
    left, right = plot(ref, accuracy, agreement).axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == [LABELS[m] for m in METHODS]
    pairs = [t.get_text() for t in right.get_legend().get_texts()]
    assert (
        "uniform soup ↔ probability ensemble" in pairs and "logit ensemble (reference) ↔ raw-feature ensemble" in pairs
    )
    assert len(pairs) == len(PAIRS)
    headers = [c.header for c in summary_table("t", accuracy, agreement).columns]
    assert headers[1:5] == [
        "uniform soup",
        "logit ensemble (reference)",
        "probability ensemble",
        "raw-feature ensemble",
    ]
    assert "agree soup/prob." in headers and "agree logit/raw feat." in headers
