"""Which (model, pretrained) pairs exist, checked by name without loading anything (spec validation).

``pretrained`` is an open_clip tag, a local checkpoint file, or ``toy`` (the embedded toy CLIP).
"""

from __future__ import annotations

import os

#: File suffixes accepted for ``pretrained: /path/to/file``.
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def is_local_checkpoint(pretrained: str) -> bool:
    """``pretrained`` names a file (a path or a checkpoint suffix), not an open_clip tag."""
    return (
        os.sep in pretrained
        or "/" in pretrained
        or pretrained.startswith("~")
        or pretrained.lower().endswith(CHECKPOINT_SUFFIXES)
    )


def check_model_name(name: str, pretrained: str) -> None:
    """Validate a (model, pretrained) pair without loading anything (used by spec validation).

    A tag must be one open_clip lists for the model; a file path is checked when θ0 is needed
    (the spec may be planned on a laptop and run where the file is).
    """
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
    if is_local_checkpoint(pretrained):
        return
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        import difflib

        close = difflib.get_close_matches(pretrained, tags, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"open_clip has no pretrained tag {pretrained!r} for {name}{hint}; tags: {tags}, "
            "or give a checkpoint file path"
        )
