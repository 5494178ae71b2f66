"""The shipped toy θ0: pre-trained once from its recipe, packaged, verified before use.

Pre-training θ0 is most of a cold quickstart's time, and its result depends only on the recipe,
so the package carries it: ``theta0/ww-toy-vit.safetensors`` (the whole CLIP, both towers) and
``theta0/ww-toy-vit.json``, its manifest (the θ0 key it serves, the recipe, the model config, the
command that reproduces it, its SHA-256). The harness uses the file only for the key it was made
for — a spec that changes the recipe changes the key and pre-trains from scratch — and refuses a
file whose bytes no longer match the manifest (a truncated copy, a bad checkout) instead of
running every expert from a broken θ0.

Reproducing the file: ``python run_bench.py toy pretrain --out FILE`` runs the recipe and writes
FILE and its manifest; with ``--out`` on the shipped path it rewrites the shipped pair.
Pre-training is deterministic for a given torch build and thread count (both recorded).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from benchmark.toy.model import TOY_MODEL

SHIPPED_DIR = Path(__file__).resolve().parent / "theta0"
SHIPPED_WEIGHTS = SHIPPED_DIR / f"{TOY_MODEL}.safetensors"
#: How the shipped pair is rebuilt (the manifest's ``command``).
PRETRAIN_COMMAND = f"python run_bench.py toy pretrain --out benchmark/toy/theta0/{TOY_MODEL}.safetensors"


class CorruptWeightsError(ValueError):
    """A θ0 file whose bytes do not match its manifest; the message says how to get a good one."""


def manifest_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shipped_manifest() -> dict[str, Any] | None:
    """The shipped manifest, or None when the package carries no θ0 (a stripped install)."""
    path = manifest_path(SHIPPED_WEIGHTS)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def verify(weights: Path, manifest: dict[str, Any]) -> None:
    """Raise :class:`CorruptWeightsError` unless ``weights`` hashes to the manifest's SHA-256."""
    if not weights.exists():
        raise CorruptWeightsError(
            f"toy θ0 {weights} is missing but its manifest is there; reinstall the "
            f"package or rebuild it: {manifest['command']}"
        )
    actual = sha256_file(weights)
    if actual != manifest["sha256"]:
        raise CorruptWeightsError(
            f"toy θ0 {weights} is corrupted (SHA-256 {actual[:12]}…, its manifest says {manifest['sha256'][:12]}…); "
            f"reinstall the package (or `git checkout -- {weights.name}`) or rebuild it: {manifest['command']}"
        )


def shipped_for(key: str) -> Path | None:
    """The verified shipped θ0 if it was made for θ0 key ``key``, else None (pre-train instead)."""
    manifest = shipped_manifest()
    if manifest is None or manifest.get("key") != key:
        return None
    verify(SHIPPED_WEIGHTS, manifest)
    return SHIPPED_WEIGHTS


def load_shipped_state() -> dict[str, torch.Tensor]:
    """The shipped θ0's state dict, verified (for tools that run outside a storage root)."""
    from safetensors.torch import load_file

    manifest = shipped_manifest()
    if manifest is None:
        raise FileNotFoundError(f"no shipped toy θ0 in {SHIPPED_DIR}; build one: {PRETRAIN_COMMAND}")
    verify(SHIPPED_WEIGHTS, manifest)
    return load_file(str(SHIPPED_WEIGHTS))


def write_manifest(
    weights: Path, *, key: str, recipe: dict, metrics: dict[str, float], command: str = PRETRAIN_COMMAND
) -> dict[str, Any]:
    """Write ``weights``' manifest next to it; returns it."""
    from benchmark.toy.model import toy_model_config

    manifest = {
        "model": TOY_MODEL,
        "key": key,
        "recipe": recipe,
        "model_config": toy_model_config(),
        "command": command,
        "sha256": sha256_file(weights),
        "bytes": weights.stat().st_size,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "metrics": {k: float(v) for k, v in metrics.items() if k not in ("seconds", "data_seconds")},
    }
    manifest_path(weights).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest
