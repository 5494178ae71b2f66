"""θ0 from real-model sources, offline: local checkpoints, the Hugging Face cache, and the errors."""

from __future__ import annotations

import pytest
import torch

from benchmark.data import fake
from benchmark.model import pretrained as models
from benchmark.model.pretrained import ForeignCheckpointError, MissingWeightsError
from benchmark.results.storage import StorageRoot
from benchmark.spec.schema import ModelSpec


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    model = fake.save_tiny_clip(folder / "tiny.safetensors")
    fake.save_tiny_clip(folder / "tiny.pt")
    return folder, model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("filename", ["tiny.safetensors", "tiny.pt"])
def test_local_checkpoint_loads_through_the_pretrained_path(tiny, tmp_path, filename):
    folder, reference = tiny
    spec = ModelSpec(name=fake.TINY_CLIP, pretrained=str(folder / filename))
    base = models.load_base_model(spec, StorageRoot.at(tmp_path))
    assert _same_weights(base.model, reference)
    assert base.resolution == 48 and not base.model.training
    assert base.tokenizer(["a photo of a dog."]).shape == (1, 24)
    assert models.base_label(spec).startswith("tiny-")


def test_pickled_module_is_refused(tiny, tmp_path):
    folder, reference = tiny
    path = tmp_path / "whole-model.pt"
    torch.save(reference, path)
    with pytest.raises(ForeignCheckpointError, match="weights_only"):
        models.load_state_file(path)


def test_checkpoint_of_another_shape_names_the_first_mismatch(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = tiny
    state = load_file(str(folder / "tiny.safetensors"))
    state["visual.proj"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "bad.safetensors"))
    spec = ModelSpec(name=fake.TINY_CLIP, pretrained=str(tmp_path / "bad.safetensors"))
    with pytest.raises(ForeignCheckpointError, match="'visual.proj' has shape"):
        models.load_base_model(spec, StorageRoot.at(tmp_path))


def test_missing_checkpoint_file_is_named(tmp_path):
    spec = ModelSpec(name="ViT-B-32", pretrained=str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(MissingWeightsError, match="nowhere.safetensors"):
        models.check_weights_available(spec)


def test_missing_tag_weights_name_the_file_and_the_fetch_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = ModelSpec(name="ViT-B-32", pretrained="openai")
    with pytest.raises(MissingWeightsError) as info:
        models.load_base_model(spec, StorageRoot.at(tmp_path))
    text = str(info.value)
    assert "models--timm--vit_base_patch32_clip_224.openai" in text and "open_clip_model.safetensors" in text
    assert str(tmp_path / "hub") in text
    assert "python -c \"import open_clip; open_clip.create_model('ViT-B-32', pretrained='openai')\"" in text


def test_tag_resolves_from_the_hugging_face_cache_offline_with_its_quick_gelu(monkeypatch, tiny, tmp_path):
    from open_clip.transformer import QuickGELU

    folder, _ = tiny
    reference = fake.save_tiny_clip(tmp_path / "quick.safetensors", seed=1, quick_gelu=True)
    snapshot = tmp_path / "hub" / "models--ww-test--tiny-clip" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (tmp_path / "quick.safetensors").rename(snapshot / "open_clip_model.safetensors")
    (tmp_path / "hub" / "models--ww-test--tiny-clip" / "refs").mkdir()
    (tmp_path / "hub" / "models--ww-test--tiny-clip" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    tag_cfg = {
        "hf_hub": "ww-test/tiny-clip/",
        "quick_gelu": True,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    monkeypatch.setattr(models, "_pretrained_cfg", lambda name, tag: tag_cfg)
    spec = ModelSpec.model_construct(name=fake.TINY_CLIP, pretrained="ww-test-tag", pretrain=None)
    assert models.resolve_pretrained(spec.name, spec.pretrained) == snapshot / "open_clip_model.safetensors"
    base = models.load_base_model(spec, StorageRoot.at(tmp_path))
    assert _same_weights(base.model, reference)
    assert any(isinstance(m, QuickGELU) for m in base.model.visual.modules())
    assert tuple(base.model.visual.preprocess_cfg["mean"]) == (0.5, 0.5, 0.5)


def test_model_names_and_tags_are_validated_without_loading():
    models.check_model_name("ViT-L-14", "laion2b_s32b_b82k")
    models.check_model_name("ViT-B-16", "/weights/vit-b-16.safetensors")
    with pytest.raises(ValueError, match="did you mean 'openai'"):
        models.check_model_name("ViT-B-32", "opneai")
    with pytest.raises(ValueError, match="did you mean 'ViT-B-32'"):
        models.check_model_name("ViT-B32", "openai")
    with pytest.raises(ValueError, match="pretrained: toy needs model"):
        models.check_model_name("ViT-B-32", "toy")


def test_expert_state_is_validated_against_the_image_encoder(tiny):
    _, reference = tiny
    theta0 = {k: v.clone() for k, v in reference.visual.state_dict().items()}
    models.check_image_encoder_state({k: v + 1 for k, v in theta0.items()}, theta0)
    first = sorted(theta0)[0]
    with pytest.raises(ForeignCheckpointError, match=f"missing tensor '{first}'"):
        models.check_image_encoder_state({k: v for k, v in theta0.items() if k != first}, theta0)
    with pytest.raises(ForeignCheckpointError, match="unexpected tensor 'visual.proj'"):
        models.check_image_encoder_state({**theta0, "visual.proj": theta0["proj"]}, theta0)
    with pytest.raises(ForeignCheckpointError, match="'proj' has shape"):
        models.check_image_encoder_state({**theta0, "proj": theta0["proj"][:2]}, theta0)
    with pytest.raises(ForeignCheckpointError, match="'proj' has dtype torch.float16"):
        models.check_image_encoder_state({**theta0, "proj": theta0["proj"].half()}, theta0)


def test_image_resolution_of_the_toy_and_a_real_architecture():
    from benchmark.toy import create_toy_model

    assert models.image_resolution(create_toy_model()) == 32
    assert models.image_resolution(_tiny_model()) == 48


def _tiny_model():
    import open_clip

    fake.register_tiny_clip()
    return open_clip.create_model(fake.TINY_CLIP, pretrained=None)
