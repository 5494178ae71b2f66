"""θ0: the pretrained CLIP whose image encoder every expert starts from and every merge is added to.

Two sources behind one function: the embedded toy (``pretrained: toy``), pre-trained once by a
short contrastive run and cached under ``<root>/cache/pretrained``; and open_clip's real models,
resolved strictly offline (a local checkpoint file, or open_clip's own cache). Only the image
encoder (``model.visual``) is ever fine-tuned or merged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmark.keys import content_key
from benchmark.storage import StorageRoot, atomic_write, safe_name, write_text_atomic

if TYPE_CHECKING:
    from benchmark.specs import ModelSpec


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on this machine; the message says how to obtain them."""


def check_model_name(name: str, pretrained: str) -> None:
    """Validate a (model, pretrained) pair without loading anything (used by spec validation)."""
    from benchmark.toy import TOY_MODEL

    if pretrained == "toy":
        if name != TOY_MODEL:
            raise ValueError(f"pretrained: toy needs model {TOY_MODEL!r}, got {name!r}")
        return
    if name == TOY_MODEL:
        raise ValueError(f"model {TOY_MODEL!r} exists only with pretrained: toy")
    import open_clip

    known = open_clip.list_models()
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown open_clip model {name!r}{hint}")


def base_key(spec: "ModelSpec") -> str:
    """Key of θ0: the model name, its pretrained tag and (toy) the pre-training recipe."""
    return content_key("base", {"name": spec.name, "pretrained": spec.pretrained, "pretrain": spec.pretrain})


def base_label(spec: "ModelSpec") -> str:
    """Human-readable pretrained label used in storage paths and result rows."""
    return f"toy-{base_key(spec)[:8]}" if spec.is_toy else safe_name(spec.pretrained)


@dataclass
class BaseModel:
    """θ0 loaded in memory with what the harness needs next to it."""

    model: Any  # open_clip.CLIP
    tokenizer: Any
    key: str

    def visual_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of θ0's image-encoder weights (names relative to ``model.visual``)."""
        return {k: v.detach().clone() for k, v in self.model.visual.state_dict().items()}


def _toy_checkpoint(spec: "ModelSpec", storage: StorageRoot) -> Path:
    return storage.cache / "pretrained" / safe_name(spec.name) / f"{base_key(spec)}.safetensors"


def ensure_base_model(spec: "ModelSpec", storage: StorageRoot, log=print) -> dict[str, float]:
    """Make θ0 available: pre-train and cache the toy once; check real weights resolve offline."""
    if not spec.is_toy:
        load_base_model(spec, storage)
        return {}
    path = _toy_checkpoint(spec, storage)
    if path.exists():
        return {"cached": 1.0}
    from safetensors.torch import save_file

    from benchmark.toy import PretrainRecipe, create_toy_model, pretrain

    recipe = PretrainRecipe(**spec.pretrain.model_dump())
    model = create_toy_model(seed=recipe.seed)
    start = time.perf_counter()
    metrics = pretrain(model, recipe, log=log)
    metrics["seconds"] = time.perf_counter() - start
    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_text_atomic(path.with_suffix(".json"), __import__("json").dumps(metrics, indent=1))
    return metrics


def load_base_model(spec: "ModelSpec", storage: StorageRoot) -> BaseModel:
    """θ0 in eval mode on the CPU; raise :class:`MissingWeightsError` with instructions if absent."""
    if spec.is_toy:
        from safetensors.torch import load_file

        from benchmark.toy import create_toy_model, toy_tokenizer

        path = _toy_checkpoint(spec, storage)
        if not path.exists():
            raise MissingWeightsError(
                f"toy θ0 {path} is missing; it is produced by the pipeline's prepare stage (run the spec)"
            )
        model = create_toy_model(seed=spec.pretrain.seed)
        model.load_state_dict(load_file(str(path)))
        return BaseModel(model.eval(), toy_tokenizer(), base_key(spec))
    return _load_open_clip(spec)


def _load_open_clip(spec: "ModelSpec") -> BaseModel:
    import open_clip

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pretrained = spec.pretrained
    is_file = Path(pretrained).expanduser().is_file()
    try:
        model = open_clip.create_model(
            spec.name, pretrained=str(Path(pretrained).expanduser()) if is_file else pretrained
        )
    except Exception as exc:  # open_clip raises several types for "not downloadable"
        raise MissingWeightsError(
            f"pretrained weights {spec.name}/{pretrained} are not available offline ({type(exc).__name__}: {exc}). "
            f"On a connected machine run: python -c \"import open_clip; open_clip.create_model('{spec.name}', "
            f"pretrained='{pretrained}')\" and copy the Hugging Face cache (~/.cache/huggingface) here, "
            "or set pretrained: to a local checkpoint file"
        ) from exc
    return BaseModel(model.eval(), open_clip.get_tokenizer(spec.name), base_key(spec))
