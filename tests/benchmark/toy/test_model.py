"""The toy CLIP, zero-shot heads and evaluation: registration, shapes and the docs/METHODS.md §3 formulas."""

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from benchmark.model.heads import zeroshot_head
from benchmark.toy import TOY_MODEL, TOY_TASKS, create_toy_model, register_toy_model, toy_tokenizer
from benchmark.trials.evaluation import classification_logits, evaluate, image_mean_std, to_model_input


@pytest.fixture(scope="module")
def model():
    return create_toy_model(seed=0)


def test_registration_is_idempotent():
    register_toy_model()
    register_toy_model()
    assert open_clip.list_models().count(TOY_MODEL) == 1
    assert open_clip.get_model_config(TOY_MODEL)["vision_cfg"]["image_size"] == 32


def test_open_clip_creates_the_registered_model_offline():
    register_toy_model()
    model = open_clip.create_model(TOY_MODEL, pretrained=None)
    assert isinstance(model, open_clip.CLIP)


def test_model_has_an_image_and_a_text_tower(model):
    assert isinstance(model, open_clip.CLIP)
    assert not model.training
    tokens = toy_tokenizer()(["a photo of a circle.", "three dots"])
    assert tokens.shape == (2, 16)
    with torch.no_grad():
        image_features = model.encode_image(torch.zeros(2, 3, 32, 32))
        text_features = model.encode_text(tokens)
    assert image_features.shape == text_features.shape == (2, 64)
    assert sum(p.numel() for p in model.visual.parameters()) > 0
    assert sum(p.numel() for p in model.transformer.parameters()) > 0


def test_creation_is_deterministic_in_the_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_toy_model(seed=5)
    after = torch.rand(1)
    b = create_toy_model(seed=5)
    c = create_toy_model(seed=6)
    assert torch.equal(before, after)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.visual.conv1.weight, c.visual.conv1.weight)


def test_zeroshot_head_has_one_unit_row_per_class(model):
    task = TOY_TASKS["shapes"]
    head = zeroshot_head(model, toy_tokenizer(), task.classnames, task.templates)
    assert head.shape == (len(task.classnames), 64)
    assert head.dtype == torch.float32
    torch.testing.assert_close(head.norm(dim=-1), torch.ones(len(task.classnames)))
    assert not head.is_inference()


def test_zeroshot_head_averages_normalised_template_embeddings(model):
    tokenizer = toy_tokenizer()
    templates = ("a {}.", "a photo of a {}.")
    head = zeroshot_head(model, tokenizer, ("circle",), templates)
    with torch.no_grad():
        embeddings = F.normalize(model.encode_text(tokenizer([t.format("circle") for t in templates])), dim=-1)
    torch.testing.assert_close(head[0], F.normalize(embeddings.mean(0), dim=-1))


def test_prompts_encoded_over_their_own_length_match_encode_text(model):
    from benchmark.model.heads import encode_prompts

    tokenizer = toy_tokenizer()
    tokens = tokenizer(["a circle.", "a photo of a big red square in the middle.", "x"])
    assert int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]  # the cut applies
    with torch.no_grad():
        torch.testing.assert_close(encode_prompts(model, tokens), model.encode_text(tokens), rtol=1e-5, atol=1e-6)


def test_zeroshot_head_is_the_same_whatever_the_chunk(model):
    task = TOY_TASKS["shapes"]
    tokenizer = toy_tokenizer()
    templates = ("a {}.", "a photo of a {}.", "a drawing of the {} shape.")
    whole = zeroshot_head(model, tokenizer, task.classnames, templates)
    with torch.no_grad():
        reference = torch.stack(
            [
                F.normalize(
                    F.normalize(model.encode_text(tokenizer([t.format(c) for t in templates])), dim=-1).mean(0), dim=-1
                )
                for c in task.classnames
            ]
        )
    torch.testing.assert_close(whole, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        zeroshot_head(model, tokenizer, task.classnames, templates, chunk=2), whole, rtol=1e-5, atol=1e-6
    )


def test_to_model_input_normalises_with_the_models_constants(model):
    mean, std = image_mean_std(model)
    assert len(mean) == len(std) == 3
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    x = to_model_input(images, mean, std)
    assert x.dtype == torch.float32
    expected = (1.0 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(x[0, :, 0, 0], expected)


def test_classification_logits_follow_the_formula(model):
    head = F.normalize(torch.randn(5, 64), dim=-1)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = classification_logits(model, head, x)
        expected = model.logit_scale.exp() * F.normalize(model.encode_image(x), dim=-1) @ head.T
    torch.testing.assert_close(logits, expected)


def test_evaluate_counts_agree_with_argmax(model):
    task = TOY_TASKS["colours"]
    head = zeroshot_head(model, toy_tokenizer(), task.classnames, task.templates)
    images, labels = task.generate("test", 37, seed=0)
    result = evaluate(model, head, images, labels, batch_size=10)
    with torch.no_grad():
        x = to_model_input(torch.from_numpy(images), *image_mean_std(model))
        predictions = classification_logits(model, head, x).argmax(-1).numpy()
    assert result["n_examples"] == 37
    assert result["n_correct"] == int((predictions == labels).sum())
    assert result["accuracy"] == pytest.approx(result["n_correct"] / 37)
    same = evaluate(model, head, torch.from_numpy(images), torch.from_numpy(labels))
    assert same == result


def test_evaluate_rejects_float_images(model):
    head = F.normalize(torch.randn(2, 64), dim=-1)
    with pytest.raises(TypeError):
        evaluate(model, head, np.zeros((1, 3, 32, 32), np.float32), np.zeros(1, np.int64))
