"""θ0: the pretrained CLIP whose image encoder every expert starts from and every merge is added to.

Two sources behind one function:

- the embedded toy (``pretrained: toy``): the θ0 shipped with the package when the spec's recipe is
  the one it was made for (hash-verified, ``benchmark.toy.shipped``), else pre-trained once by a
  contrastive run; either way cached under ``<root>/cache/pretrained``;
- open_clip's real models (``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, ... with any pretrained tag
  open_clip lists, ``openai`` by default), resolved strictly offline: from the Hugging Face cache
  open_clip downloads into (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), or from a local checkpoint file (``pretrained: /path/to/file``).

Weights are read only through safetensors or ``torch.load(weights_only=True)`` (docs/DESIGN.md,
reliability): a checkpoint is data, never code. The architecture is built by open_clip without
weights, then the state dict is loaded strictly, so a checkpoint of another architecture is an
error naming the first mismatching tensor. Tags trained with QuickGELU (every ``openai`` tag) get
it, as open_clip's ``-quickgelu`` configs do; a local file of OpenAI weights therefore needs the
model name ``ViT-B-32-quickgelu`` (open_clip's name for that architecture).

Only the image encoder (``model.visual``) is ever fine-tuned or merged; experts are validated
against θ0's encoder with :func:`check_image_encoder_state` before they are merged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from benchmark.model.names import CHECKPOINT_SUFFIXES, check_model_name, is_local_checkpoint
from benchmark.results.storage import StorageRoot, atomic_write, safe_name, write_text_atomic
from benchmark.spec.keys import content_key, revision

if TYPE_CHECKING:
    from benchmark.spec.schema import ModelSpec


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on this machine; the message says how to obtain them."""


class ForeignCheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe to load, or not matching its architecture."""


class NonFiniteWeightsError(ForeignCheckpointError):
    """Weights holding NaN or Inf (a diverged fine-tune, a broken conversion)."""


# ---------------------------------------------------------------------------------------------
# Names and where their weights live


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache open_clip downloads into (read at call time, not import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _pretrained_cfg(name: str, tag: str) -> dict:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        check_model_name(name, tag)  # raises with the list of tags
        raise ValueError(f"open_clip has no pretrained config for {name}/{tag}")  # pragma: no cover
    return cfg


def _hub_files(cfg: dict) -> tuple[str, list[str]]:
    """(repo id, candidate file names in open_clip's order of preference) of a tag."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    # open_clip's convention: "org/repo/" means the default file, "org/repo/file.bin" that file
    repo, filename = os.path.split(cfg["hf_hub"])
    if not filename or filename == HF_WEIGHTS_NAME:
        return repo, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def fetch_command(name: str, pretrained: str) -> str:
    """The one command that puts ``name``/``pretrained`` into the HF cache on a connected machine."""
    return f"python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{pretrained}')\""


def resolve_pretrained(name: str, pretrained: str) -> Path:
    """The checkpoint file of a real θ0 on this machine, without any network access.

    Raises :class:`MissingWeightsError` naming the expected file and the command that fetches it.
    """
    if is_local_checkpoint(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"checkpoint file {path} (pretrained of {name}) does not exist; copy it there or fix the spec's "
                "pretrained: path"
            )
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ValueError(f"checkpoint {path}: expected one of {CHECKPOINT_SUFFIXES} (safetensors preferred)")
        return path
    cfg = _pretrained_cfg(name, pretrained)
    cache = hf_cache_dir()
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, candidates = _hub_files(cfg)
        for filename in candidates:
            found = try_to_load_from_cache(repo, filename, cache_dir=str(cache))
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        folder = f"models--{repo.replace('/', '--')}"
        expected = cache / folder / "snapshots" / "<revision>" / candidates[0]
        alternatives = f" (or {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
        copy = f"and copy its ~/.cache/huggingface/hub/{folder} folder to {cache}/ here (or point HF_HUB_CACHE at it)"
    else:  # pragma: no cover - every tag of the paper's models has a Hugging Face copy
        expected, alternatives, copy = Path(cfg.get("url", "?")), " (this tag has no Hugging Face copy)", ""
    raise MissingWeightsError(
        f"pretrained weights {name}/{pretrained} are not on this machine: expected {expected}{alternatives}. "
        f"On a connected machine run:  {fetch_command(name, pretrained)}  {copy}; "
        "or set the spec's pretrained: to a local checkpoint file"
    )


def check_weights_available(spec: "ModelSpec") -> None:
    """Fail before any work when a real θ0's weights are missing, or when the shipped toy θ0 this
    spec would use is corrupted (another toy recipe is pre-trained by the run)."""
    if not spec.is_toy:
        resolve_pretrained(spec.name, spec.pretrained)
        return
    from benchmark.toy.shipped import shipped_for

    shipped_for(base_key(spec))


# ---------------------------------------------------------------------------------------------
# Keys and labels


def base_key(spec: "ModelSpec") -> str:
    """Key of θ0: the model name, its pretrained tag (or file path) and, for the toy, the pre-training
    recipe, the architecture and the revision of the code that runs it (``pretrain`` of
    `benchmark.spec.keys.REVISIONS`): the shipped θ0 serves exactly one key; any change pre-trains anew."""
    payload = {"name": spec.name, "pretrained": spec.pretrained, "pretrain": spec.pretrain}
    if spec.is_toy:
        from benchmark.toy.model import toy_model_config

        payload["pretrain_revision"] = revision("pretrain")
        payload["architecture"] = toy_model_config()
    return content_key("base", payload)


def base_label(spec: "ModelSpec") -> str:
    """Human-readable pretrained label used in storage paths and result rows.

    A local checkpoint is labelled by its file stem plus a hash of its path, so two files with the
    same name in different folders do not collide.
    """
    if spec.is_toy:
        return f"toy-{base_key(spec)[:8]}"
    if is_local_checkpoint(spec.pretrained):
        return f"{safe_name(Path(spec.pretrained).stem)}-{content_key('path', spec.pretrained)[:6]}"
    return safe_name(spec.pretrained)


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    """θ0 loaded in memory with what the harness needs next to it."""

    model: Any  # open_clip.CLIP
    tokenizer: Any
    key: str

    def visual_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of θ0's image-encoder weights (names relative to ``model.visual``)."""
        return {k: v.detach().clone() for k, v in self.model.visual.state_dict().items()}

    @property
    def resolution(self) -> int:
        return image_resolution(self.model)


def image_resolution(model: torch.nn.Module) -> int:
    """Input side length of a CLIP's image encoder (the eval cache's resolution)."""
    clip = getattr(model, "module", model)
    size = getattr(clip.visual, "image_size", None)
    if size is None:  # pragma: no cover - every open_clip vision tower records it
        size = (getattr(clip.visual, "preprocess_cfg", None) or {})["size"]
    if isinstance(size, (tuple, list)):
        if size[0] != size[-1]:
            raise ValueError(f"non-square input {tuple(size)} is not supported by the eval cache")
        size = size[0]
    return int(size)


def _toy_checkpoint(spec: "ModelSpec", storage: StorageRoot) -> Path:
    return storage.cache / "pretrained" / safe_name(spec.name) / f"{base_key(spec)}.safetensors"


def ensure_base_model(spec: "ModelSpec", storage: StorageRoot, log=print) -> dict[str, float]:
    """Make θ0 available: cache the toy once (the shipped θ0 or a pre-training); check real weights resolve offline."""
    if not spec.is_toy:
        load_base_model(spec, storage)
        return {}
    path = _toy_checkpoint(spec, storage)
    if path.exists():
        return {"cached": 1.0}
    from benchmark.toy.shipped import shipped_for

    shipped = shipped_for(base_key(spec))  # verified against its manifest, or None for another recipe
    if shipped is not None:
        import shutil

        with atomic_write(path) as tmp:
            shutil.copyfile(shipped, tmp)
        write_text_atomic(path.with_suffix(".json"), json.dumps({"shipped": str(shipped)}, indent=1))
        return {"shipped": 1.0}
    from safetensors.torch import save_file

    from benchmark.toy import PretrainRecipe, create_toy_model, pretrain

    recipe = PretrainRecipe(**spec.pretrain.model_dump())
    model = create_toy_model(seed=recipe.seed)
    start = time.perf_counter()
    metrics = pretrain(model, recipe, log=log, log_every=max(1, recipe.steps // 40))  # ~40 progress updates
    metrics["seconds"] = time.perf_counter() - start
    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_text_atomic(path.with_suffix(".json"), json.dumps(metrics, indent=1))
    return metrics


def load_base_model(spec: "ModelSpec", storage: StorageRoot) -> LoadedModel:
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
        return LoadedModel(model.eval(), toy_tokenizer(), base_key(spec))
    return _load_open_clip(spec)


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file, through safetensors or ``torch.load(weights_only=True)`` only.

    Accepts the wrappers checkpoints come in (``{"state_dict": ...}`` of open_clip's trainer,
    ``module.`` prefixes of DDP); anything else that is not a flat name → tensor mapping is refused.
    """
    import pickle

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise ForeignCheckpointError(
                f"{path} is not a readable safetensors file ({exc}): truncated or corrupted; copy or download it again"
            ) from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next(
            (line for line in str(exc).splitlines() if "WeightsUnpickler error" in line or "Unsupported" in line),
            str(exc).splitlines()[0] if str(exc) else "",
        )
        raise ForeignCheckpointError(
            f"{path} is refused: torch.load(weights_only=True) cannot read it ({detail.strip()}); it needs code "
            "execution to load (a pickled module or object) or is not a checkpoint — export its state_dict to "
            "safetensors where it came from"
        ) from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ForeignCheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True) ({type(exc).__name__}: {first}): truncated "
            "or corrupted, or a TorchScript archive; copy it again or convert it to a safetensors state dict"
        ) from None
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ForeignCheckpointError(f"{path} does not hold a state dict (name → tensor)")
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return dict(checkpoint)


def _create_architecture(name: str, quick_gelu: bool) -> torch.nn.Module:
    import open_clip

    # open_clip warns that no weights were loaded: expected, they are loaded next
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        logging.disable(previous)


def _load_open_clip(spec: "ModelSpec") -> LoadedModel:
    import open_clip
    from open_clip.transform import merge_preprocess_dict

    path = resolve_pretrained(spec.name, spec.pretrained)
    cfg = {} if is_local_checkpoint(spec.pretrained) else _pretrained_cfg(spec.name, spec.pretrained)
    model = _create_architecture(spec.name, bool(cfg.get("quick_gelu", False)))
    state = load_state_file(path)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    check_state(state, model.state_dict(), what=f"checkpoint {path} for {spec.name}")
    model.load_state_dict(state, strict=True)
    if cfg:
        open_clip.set_model_preprocess_cfg(model, merge_preprocess_dict(model.visual.preprocess_cfg, cfg))
    return LoadedModel(model.eval(), open_clip.get_tokenizer(spec.name), base_key(spec))


# ---------------------------------------------------------------------------------------------
# Validation of experts


def check_state(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], *, what: str) -> None:
    """``state`` has exactly ``reference``'s tensor names, shapes and dtypes; else name the first mismatch."""
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    if missing:
        raise ForeignCheckpointError(
            f"{what}: missing tensor {missing[0]!r} ({len(missing)} missing"
            + (f", {len(extra)} unexpected, e.g. {extra[0]!r}" if extra else "")
            + ")"
        )
    if extra:
        raise ForeignCheckpointError(f"{what}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected)")
    for name in reference:
        got, want = state[name], reference[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ForeignCheckpointError(
                f"{what}: tensor {name!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
            )
        if got.dtype != want.dtype:
            raise ForeignCheckpointError(f"{what}: tensor {name!r} has dtype {got.dtype}, expected {want.dtype}")


def check_finite_state(state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Every floating-point tensor of ``state`` is finite; else name the first one that is not.

    A NaN in one expert turns every merge it enters into NaN weights whose accuracy is still a
    number (argmax of NaN logits picks a class), so it must be stopped before merging, not after.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            kinds = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
            raise NonFiniteWeightsError(
                f"{what}: tensor {name!r} holds {bad} non-finite value(s) ({kinds} among them) of {tensor.numel()}"
            )


def check_image_encoder_state(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], what: str = "expert image encoder"
) -> None:
    """Validate an expert's image-encoder state dict against θ0's (``LoadedModel.visual_state()``).

    Every name of θ0's encoder must be present with the same shape and dtype, and nothing else:
    a checkpoint of another architecture, a whole CLIP instead of its ``visual`` part, or a
    half-precision export is an error naming the first mismatch, never a silent partial merge.
    Since every expert is held to θ0, experts that disagree with each other are caught too.
    Non-finite values are refused as well (:func:`check_finite_state`).
    """
    check_state(state, reference, what=f"{what} does not match θ0")
    check_finite_state(state, what=what)
