"""The toy CLIP: a tiny open_clip architecture small enough to train on a CPU.

The embedded default (docs/DESIGN.md) must run the *real* pipeline without a download, so the toy model
is an ordinary open_clip ``CLIP`` built from a registered config, not a fork: every code path that
serves ViT-B-32 (heads, fine-tuning, task vectors over ``model.visual``) serves it unchanged.
Sizes follow TOY_NOTES.md (a 2-layer ViT on 32x32 images, 8x8 patches, a 2-layer text tower);
``vocab_size`` stays 49408 so open_clip's bundled BPE tokenizer works offline.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import open_clip
import torch

TOY_MODEL = "ww-toy-vit"

# A ViT's attention head count is width / head_width (open_clip's VisionCfg), so head_width 32 on
# width 128 gives 4 heads. The text context is 16 tokens: every toy caption and prompt fits.
TOY_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 32,
        "layers": 2,
        "width": 128,
        "patch_size": 8,
        "head_width": 32,
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
    },
}


def register_toy_model() -> None:
    """Make ``open_clip.create_model(TOY_MODEL, pretrained=None)`` work; safe to call repeatedly.

    open_clip's supported extension point is ``add_model_config(path)``: it appends a JSON file (or
    folder) to its config search path and rescans, naming the config after the file's stem. The
    config lives here as a dict (one source of truth, easy to hash into content keys), so it is
    written to a temporary ``ww-toy-vit.json`` for the rescan. The registry keeps the parsed config
    in memory, and later rescans skip paths that no longer exist, so the file need not outlive
    the call. Every process (each Ray worker) registers for itself.
    """
    if TOY_MODEL in open_clip.list_models():
        return
    with tempfile.TemporaryDirectory(prefix="ww-toy-") as tmp:
        path = Path(tmp) / f"{TOY_MODEL}.json"
        path.write_text(json.dumps(TOY_MODEL_CONFIG))
        open_clip.add_model_config(path)
    if TOY_MODEL not in open_clip.list_models():  # pragma: no cover - open_clip changed its rules
        raise RuntimeError(f"open_clip did not register {TOY_MODEL!r}")


def create_toy_model(seed: int = 0) -> open_clip.CLIP:
    """A randomly initialised toy CLIP, identical for identical seeds, in eval mode.

    Initialisation draws from torch's global generator, so it is seeded inside ``fork_rng``: the
    caller's random state is neither consumed nor changed.
    """
    register_toy_model()
    # open_clip warns that no pretrained weights were loaded: expected here, so silenced.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(TOY_MODEL, pretrained=None)
    finally:
        logging.disable(previous)
    return model.eval()


def toy_tokenizer():
    """open_clip's bundled BPE tokenizer, truncating/padding to the toy context length (16)."""
    register_toy_model()
    return open_clip.get_tokenizer(TOY_MODEL)


def toy_model_config() -> dict[str, Any]:
    """A copy of the registered config, for content keys and manifests."""
    return copy.deepcopy(TOY_MODEL_CONFIG)
