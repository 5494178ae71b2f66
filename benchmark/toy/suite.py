"""The offline image suite: procedurally generated 32x32 classification tasks and pre-training pairs.

Why procedural: the embedded default (docs/DESIGN.md) may download nothing, yet it must exercise the
whole pipeline with tasks that behave like the paper's: a pre-trained θ0 with real but imperfect
zero-shot accuracy, experts that gain a lot by fine-tuning, and task vectors that interfere when
summed. Each task therefore has its own visual domain (as Cars, SVHN, DTD... differ), its class
names are words that θ0 met during pre-training, and its images are drawn in a *harder style*
(clutter, noise, low contrast, colour casts, smaller objects) than most pre-training images: the
gap between the two styles is the headroom that fine-tuning, and merging, can recover. On top of
the style, every single-domain task is seen through a *sensor* pre-training never used
(``TASK_SHIFT``: half of each 8x8 patch's pixels moved, the same way in every patch): θ0's
features still serve once the patch embedding has learned the wiring, which is what experts do and
what their task vectors share.

Determinism: every example has its own random stream, ``SeedSequence((tag, split, seed), i)``, so
example ``i`` is the same whatever ``n`` is (a larger draw extends a smaller one) and the train,
test and pre-training streams never share a draw. The digit glyphs come from scikit-learn's bundled
``load_digits`` (no download); test glyphs are disjoint from the glyphs the train split and the
pre-training pairs use, so zero-shot and expert test accuracy are measured on unseen handwriting.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

TOY_IMAGE_SIZE = 32

_S = TOY_IMAGE_SIZE
_YY, _XX = np.mgrid[0:_S, 0:_S].astype(np.float32) + 0.5
_SPLITS = {"train": 1, "test": 2}
_PRETRAINING_TAG = "pretraining"

# Named colours (RGB in [0, 1]): the vocabulary of the colour task and of the captions.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.55, 0.08),
    "yellow": (0.92, 0.86, 0.15),
    "green": (0.15, 0.65, 0.22),
    "cyan": (0.15, 0.80, 0.85),
    "blue": (0.15, 0.25, 0.88),
    "purple": (0.55, 0.20, 0.75),
    "pink": (0.96, 0.52, 0.75),
    "brown": (0.50, 0.30, 0.14),
    "grey": (0.50, 0.50, 0.50),
    "white": (0.95, 0.95, 0.95),
    "black": (0.06, 0.06, 0.06),
}
COLOUR_TASK_COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "grey")
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "crescent")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COUNT_WORDS = ("one", "two", "three", "four", "five", "six")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
STRIPE_ORIENTATIONS = ("horizontal", "vertical", "rising diagonal", "falling diagonal")
TEXTURES = ("checkered", "dotted", "grid", "zigzag", "speckled", "wavy")
DIRECTIONS = ("right", "down right", "down", "down left", "left", "up left", "up", "up right")
SIZES = ("small", "large")


# ----------------------------------------------------------------------------------------------
# Random streams


def _stable_id(text: str) -> int:
    """A process-independent integer for a name (Python's ``hash`` is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def _example_rngs(tag: str, split_code: int, seed: int, n: int):
    """One independent generator per example: example i does not depend on n or on other splits."""
    root = (_stable_id(tag), split_code, int(seed))
    for i in range(n):
        yield np.random.default_rng(np.random.SeedSequence(entropy=root, spawn_key=(i,)))


# ----------------------------------------------------------------------------------------------
# Drawing primitives (float32 images [S, S, 3] in [0, 1])


@lru_cache(maxsize=None)
def _upsample_matrix(k: int) -> np.ndarray:
    """Bilinear interpolation matrix [S, k] taking a k-point field to S pixels."""
    pos = (np.arange(_S) + 0.5) * k / _S - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, k - 1)
    hi = np.clip(lo + 1, 0, k - 1)
    w = np.clip(pos - np.floor(pos), 0.0, 1.0)
    m = np.zeros((_S, k), np.float32)
    m[np.arange(_S), lo] += 1.0 - w
    m[np.arange(_S), hi] += w
    return m


def _smooth_field(rng: np.random.Generator, k: int, channels: int = 3) -> np.ndarray:
    """A low-frequency random field [S, S, channels] in [0, 1] (k x k control points)."""
    m = _upsample_matrix(k)
    field = rng.random((channels, k, k), dtype=np.float32)
    return np.einsum("ik,ckl,jl->ijc", m, field, m)


def _jitter_colour(rng: np.random.Generator, rgb, amount: float) -> np.ndarray:
    """A named colour with per-channel noise and a brightness change, as lighting would do."""
    c = np.asarray(rgb, np.float32) + rng.normal(0.0, amount, 3).astype(np.float32)
    c = c * rng.uniform(1.0 - 1.5 * amount, 1.0 + amount)
    return np.clip(c, 0.0, 1.0)


def _random_colour(rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> tuple[str, np.ndarray]:
    names = [c for c in COLOURS if c not in exclude]
    name = names[rng.integers(len(names))]
    return name, _jitter_colour(rng, COLOURS[name], 0.06)


def _luma(rgb) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _contrasting(rng: np.random.Generator, ref: np.ndarray, min_gap: float, exclude=()) -> tuple[str, np.ndarray]:
    """A random named colour far enough from ``ref`` (in RGB) to stay visible."""
    for _ in range(50):
        name, c = _random_colour(rng, exclude)
        if np.abs(c - ref).sum() >= min_gap:
            return name, c
    return name, c


def _background(rng: np.random.Generator, clutter: float, base: np.ndarray | None = None) -> np.ndarray:
    """Plain, gradient or textured background; more clutter means more texture.

    ``clutter`` in [0, 1] is the one knob separating the pre-training style (mostly low) from the
    task style (mostly high).
    """
    if base is None:
        base = rng.random(3).astype(np.float32) * 0.9 + 0.05
    img = np.broadcast_to(base, (_S, _S, 3)).astype(np.float32).copy()
    if rng.random() < clutter:
        field = _smooth_field(rng, int(rng.integers(2, 9)))
        img = img * (1 - clutter * 0.55) + field * clutter * 0.55
    return img


def _finish(rng: np.random.Generator, img: np.ndarray, clutter: float) -> np.ndarray:
    """Global degradations of the task style: colour cast, contrast loss, pixel noise."""
    if clutter > 0:
        cast = 1.0 + rng.uniform(-0.2, 0.2, 3).astype(np.float32) * clutter
        img = img * cast
        contrast = 1.0 - rng.uniform(0.0, 0.45) * clutter
        img = (img - img.mean()) * contrast + img.mean()
        img = img + rng.normal(0.0, 0.07 * clutter, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def _paint(img: np.ndarray, mask: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return img * (1.0 - m) + rgb * m


def _coords(cx: float, cy: float, r: float, angle: float):
    """Pixel grid in a shape's frame: centred, scaled by its radius, rotated by ``angle`` (rad)."""
    dx, dy = (_XX - cx) / r, (_YY - cy) / r
    ca, sa = np.cos(angle), np.sin(angle)
    return ca * dx + sa * dy, -sa * dx + ca * dy


def _soft(sd: np.ndarray, r: float) -> np.ndarray:
    """Anti-aliased mask from a signed distance in shape units (positive inside)."""
    return np.clip(sd * r + 0.5, 0.0, 1.0).astype(np.float32)


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distances (unit radius, image y pointing down, positive inside)."""
    if shape == "circle":
        return 1.0 - np.hypot(u, v)
    if shape == "square":
        return 0.8 - np.maximum(np.abs(u), np.abs(v))
    if shape == "diamond":
        return (1.1 - (np.abs(u) + np.abs(v))) * 0.7071
    if shape == "triangle":  # apex up
        return 0.55 - np.maximum.reduce([v, 0.866 * u - 0.5 * v, -0.866 * u - 0.5 * v])
    if shape == "cross":
        arm = 0.32
        return np.maximum(np.minimum(arm - np.abs(u), 1.0 - np.abs(v)), np.minimum(1.0 - np.abs(u), arm - np.abs(v)))
    if shape == "ring":
        return 0.24 - np.abs(np.hypot(u, v) - 0.74)
    if shape == "star":
        rho, theta = np.hypot(u, v), np.arctan2(v, u) + np.pi / 2
        edge = 0.42 + 0.6 * ((1.0 + np.cos(5.0 * theta)) / 2.0) ** 1.5
        return (edge - rho) * 0.6
    if shape == "crescent":
        return np.minimum(1.0 - np.hypot(u, v), np.hypot(u - 0.5, v + 0.15) - 0.78)
    raise ValueError(f"unknown shape {shape!r}")


def _shape_angle(rng: np.random.Generator, shape: str) -> float:
    """Rotation that keeps a shape recognisable (a square turned 45 degrees is a diamond)."""
    if shape in ("circle", "ring", "star", "crescent"):
        return float(rng.uniform(0, 2 * np.pi))
    return float(rng.uniform(-0.2, 0.2))


def _shape_mask(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    return _soft(_shape_sdf(shape, *_coords(cx, cy, r, angle)), r)


def _position_centre(rng: np.random.Generator, index: int, jitter: float) -> tuple[float, float]:
    """Centre of a 3x3 cell of the image (``POSITIONS`` order), jittered inside the cell."""
    row, col = divmod(index, 3)
    cell = _S / 3
    return (
        (col + 0.5) * cell + rng.uniform(-jitter, jitter),
        (row + 0.5) * cell + rng.uniform(-jitter, jitter),
    )


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """[S, S, 3] float in [0, 1] to [3, S, S] uint8, the layout the evaluation cache stores."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(2, 0, 1)


# ----------------------------------------------------------------------------------------------
# Domains. Each ``_draw_*`` renders one image from explicit attributes and a clutter level; tasks
# and pre-training call the same functions with different attribute and clutter distributions.


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 glyphs), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


@lru_cache(maxsize=None)
def _digit_pool(split: str, label: int) -> np.ndarray:
    """Glyph indices of one digit for a split; every 4th glyph is reserved for the test split."""
    _, targets = _digits()
    idx = np.arange(len(targets))
    held_out = idx % 4 == 0
    keep = held_out if split == "test" else ~held_out
    return idx[keep & (targets == label)]


def _glyph_matrix(offset: float, size: float) -> np.ndarray:
    """Bilinear matrix [S, 8] placing 8 glyph pixels over ``size`` canvas pixels from ``offset``."""
    pos = (np.arange(_S) + 0.5 - offset) * 8.0 / size - 0.5
    lo = np.floor(pos).astype(int)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((_S, 8), np.float32)
    rows = np.arange(_S)
    for idx, weight in ((lo, 1.0 - w), (lo + 1, w)):
        ok = (idx >= 0) & (idx < 8)
        m[rows[ok], idx[ok]] += weight[ok]
    return m


def _draw_digit(rng, label: int, split: str, clutter: float, size_range, jitter: float) -> tuple[np.ndarray, str]:
    """A handwritten digit of the split's glyph pool, scaled and shifted up to ``jitter`` px."""
    glyphs, _ = _digits()
    pool = _digit_pool(split, label)
    glyph = glyphs[pool[rng.integers(len(pool))]]
    size = float(rng.uniform(*size_range))
    slack = (_S - size) / 2
    ox, oy = slack + rng.uniform(-1, 1, 2) * min(jitter, slack)
    ink = _glyph_matrix(oy, size) @ glyph @ _glyph_matrix(ox, size).T
    ink = np.clip(ink * 1.3, 0.0, 1.0)
    _, bg = _random_colour(rng)
    img = _background(rng, clutter, bg)
    ink_name, ink_rgb = _contrasting(rng, bg, 0.9 - 0.4 * clutter)
    return _paint(img, ink, ink_rgb), ink_name


def _draw_object(rng, shape: str, colour: np.ndarray, cx, cy, r, clutter, bg=None, distractors: int = 0):
    img = _background(rng, clutter, bg)
    for _ in range(distractors):
        # Small blobs of another colour: clutter a task must look past.
        _, dc = _random_colour(rng)
        dshape = SHAPES[rng.integers(len(SHAPES))]
        dr = rng.uniform(1.5, 3.0)
        img = _paint(img, _shape_mask(dshape, rng.uniform(3, 29), rng.uniform(3, 29), dr, 0.0), dc)
    return _paint(img, _shape_mask(shape, cx, cy, r, _shape_angle(rng, shape)), colour)


def _grating(kind: str, u: np.ndarray, v: np.ndarray, period: float, phase: float, sharp: bool) -> np.ndarray:
    wave = np.cos(2 * np.pi * u / period + phase)
    if sharp:
        return (wave > 0).astype(np.float32)
    return (0.5 + 0.5 * wave).astype(np.float32)


_STRIPE_NORMALS = {  # angle of the direction across the stripes (image y points down)
    "horizontal": np.pi / 2,
    "vertical": 0.0,
    "rising diagonal": np.pi / 4,
    "falling diagonal": -np.pi / 4,
}


def _draw_stripes(rng, orientation: str, clutter: float, patch: bool) -> tuple[np.ndarray, str, str]:
    angle = _STRIPE_NORMALS[orientation] + rng.uniform(-0.15, 0.15)
    u, _ = _coords(16.0, 16.0, 1.0, angle)
    period = rng.uniform(4.0, 9.0)
    pattern = _grating(orientation, u, None, period, rng.uniform(0, 2 * np.pi), sharp=not patch)
    a_name, a = _random_colour(rng)
    b_name, b = _contrasting(rng, a, 0.8 - 0.3 * clutter)
    striped = a * pattern[..., None] + b * (1.0 - pattern[..., None])
    if not patch:
        return striped, a_name, b_name
    # Task style: the grating fills only a disc (a Gabor-like patch) over a cluttered background.
    img = _background(rng, clutter)
    r = rng.uniform(9.0, 15.0)
    cx, cy = rng.uniform(r * 0.7, _S - r * 0.7, 2)
    disc = _soft(1.0 - np.hypot((_XX - cx) / r, (_YY - cy) / r), r)
    return img * (1 - disc[..., None]) + striped * disc[..., None], a_name, b_name


def _draw_dots(rng, count: int, clutter: float, uniform: bool) -> tuple[np.ndarray, str]:
    bg_name, bg = _random_colour(rng)
    img = _background(rng, clutter, bg)
    colour_name, colour = _contrasting(rng, bg, 0.8 - 0.3 * clutter)
    placed: list[tuple[float, float, float]] = []
    while len(placed) < count:
        r = 2.8 if uniform else float(rng.uniform(2.0, 3.6))
        cx, cy = rng.uniform(r + 1, _S - r - 1, 2)
        if all(np.hypot(cx - x, cy - y) > r + rr + 1.5 for x, y, rr in placed):
            placed.append((cx, cy, r))
    for cx, cy, r in placed:
        c = colour if uniform else _contrasting(rng, bg, 0.6)[1]
        img = _paint(img, _shape_mask("circle", cx, cy, r, 0.0), c)
    return img, colour_name


def _texture_pattern(rng, texture: str) -> np.ndarray:
    """Binary-ish texture map [S, S] in [0, 1] for one of ``TEXTURES``."""
    period = rng.uniform(5.0, 9.0)
    u, v = _coords(16.0, 16.0, 1.0, rng.uniform(-0.3, 0.3))
    fu, fv = (u / period) % 1.0, (v / period) % 1.0
    if texture == "checkered":
        return ((fu < 0.5) ^ (fv < 0.5)).astype(np.float32)
    if texture == "dotted":
        return (np.hypot(fu - 0.5, fv - 0.5) < rng.uniform(0.18, 0.3)).astype(np.float32)
    if texture == "grid":
        width = rng.uniform(0.12, 0.22)
        return ((np.abs(fu - 0.5) > 0.5 - width / 2) | (np.abs(fv - 0.5) > 0.5 - width / 2)).astype(np.float32)
    if texture == "zigzag":
        tri = np.abs((u / period) % 1.0 - 0.5) * period * rng.uniform(1.0, 1.6)
        return (((v + tri) / (period * 0.8)) % 1.0 < 0.5).astype(np.float32)
    if texture == "speckled":
        return (rng.random((_S, _S)) < rng.uniform(0.12, 0.3)).astype(np.float32)
    if texture == "wavy":
        wave = v + rng.uniform(1.5, 3.0) * np.sin(2 * np.pi * u / rng.uniform(8.0, 14.0))
        return ((wave / (period * 0.8)) % 1.0 < 0.5).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}")


def _draw_texture(rng, texture: str, clutter: float) -> tuple[np.ndarray, str, str]:
    pattern = _texture_pattern(rng, texture)
    a_name, a = _random_colour(rng)
    b_name, b = _contrasting(rng, a, 0.8 - 0.4 * clutter)
    img = a * pattern[..., None] + b * (1.0 - pattern[..., None])
    if clutter > 0:
        img = img * (1 - 0.5 * clutter) + _smooth_field(rng, int(rng.integers(2, 6))) * 0.5 * clutter
    return img, a_name, b_name


_DIRECTION_ANGLES = {name: i * np.pi / 4 for i, name in enumerate(DIRECTIONS)}  # y points down


def _arrow_sdf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """An arrow pointing along +u: a shaft and a triangular head."""
    shaft = np.minimum(0.16 - np.abs(v), np.minimum(u + 0.95, 0.25 - u))
    head = np.minimum(u - 0.1, (0.95 - u) * 0.7 - np.abs(v))
    return np.maximum(shaft, head)


def _draw_arrow(rng, direction: str, clutter: float, r_range, jitter: float) -> tuple[np.ndarray, str]:
    angle = _DIRECTION_ANGLES[direction] + rng.uniform(-0.15, 0.15)
    r = float(rng.uniform(*r_range))
    slack = max(0.0, _S / 2 - r * 0.9)
    cx, cy = _S / 2 + rng.uniform(-1, 1, 2) * min(jitter, slack)
    _, bg = _random_colour(rng)
    img = _background(rng, clutter, bg)
    colour_name, colour = _contrasting(rng, bg, 0.9 - 0.4 * clutter)
    mask = _soft(_arrow_sdf(*_coords(cx, cy, r, angle)), r)
    return _paint(img, mask, colour), colour_name


# ----------------------------------------------------------------------------------------------
# Tasks


def _task_clutter(rng) -> float:
    """Task style: mostly heavy clutter (pre-training mostly sees light clutter)."""
    return float(rng.uniform(0.3, 0.9))


def _centre(rng, jitter: float) -> np.ndarray:
    return _S / 2 + rng.uniform(-jitter, jitter, 2)


def _render_digits(rng, label: int, split: str) -> np.ndarray:
    c = _task_clutter(rng)
    return _finish(rng, _draw_digit(rng, label, split, c, (20.0, 28.0), 2.0)[0], c)


def _render_shapes(rng, label: int, split: str) -> np.ndarray:
    c = _task_clutter(rng)
    r = rng.uniform(8.0, 12.0)
    cx, cy = _centre(rng, 2.0)
    _, bg = _random_colour(rng)
    _, colour = _contrasting(rng, bg, 0.9 - 0.4 * c)
    img = _draw_object(rng, SHAPES[label], colour, cx, cy, r, c, bg, distractors=int(rng.integers(0, 2)))
    return _finish(rng, img, c)


def _render_colours(rng, label: int, split: str) -> np.ndarray:
    c = _task_clutter(rng)
    name = COLOUR_TASK_COLOURS[label]
    colour = _jitter_colour(rng, COLOURS[name], 0.08)
    _, bg = _contrasting(rng, colour, 0.7, exclude=(name,))
    r = rng.uniform(7.0, 11.0)
    cx, cy = _centre(rng, 3.0)
    shape = SHAPES[rng.integers(len(SHAPES))]
    img = _draw_object(rng, shape, colour, cx, cy, r, c, bg, distractors=int(rng.integers(0, 2)))
    return _finish(rng, img, c)


def _render_stripes(rng, label: int, split: str) -> np.ndarray:
    c = _task_clutter(rng)
    return _finish(rng, _draw_stripes(rng, STRIPE_ORIENTATIONS[label], c, patch=True)[0], c)


def _render_dots(rng, label: int, split: str) -> np.ndarray:
    c = _task_clutter(rng)
    return _finish(rng, _draw_dots(rng, label + 1, c, uniform=False)[0], c)


def _render_position(rng, label: int, split: str) -> np.ndarray:
    c = _task_clutter(rng)
    r = rng.uniform(4.0, 6.0)
    cx, cy = _position_centre(rng, label, 2.0)
    _, bg = _random_colour(rng)
    _, colour = _contrasting(rng, bg, 0.9 - 0.4 * c)
    return _finish(rng, _draw_object(rng, SHAPES[rng.integers(len(SHAPES))], colour, cx, cy, r, c, bg), c)


def _render_textures(rng, label: int, split: str) -> np.ndarray:
    c = _task_clutter(rng)
    return _finish(rng, _draw_texture(rng, TEXTURES[label], c)[0], c)


def _render_arrows(rng, label: int, split: str) -> np.ndarray:
    c = _task_clutter(rng)
    return _finish(rng, _draw_arrow(rng, DIRECTIONS[label], c, (9.0, 13.0), 2.0)[0], c)


_Renderer = Callable[[np.random.Generator, int, str], np.ndarray]
_RENDERERS: dict[str, _Renderer] = {
    "digits": _render_digits,
    "shapes": _render_shapes,
    "colours": _render_colours,
    "stripes": _render_stripes,
    "dots": _render_dots,
    "position": _render_position,
    "textures": _render_textures,
    "arrows": _render_arrows,
}


# ----------------------------------------------------------------------------------------------
# The tasks' sensor: a fixed transform every single-domain task's images pass through, and
# pre-training's never do. It is the toy's version of the gap between CLIP's web photos and
# satellite or scanned-digit images: θ0's features still fit (the transform is linear on each
# 8x8 patch, so an expert can undo it inside the patch embedding) but its zero-shot head no longer
# reads the images well, which leaves the experts headroom that merging can recover.


@lru_cache(maxsize=None)
def _tile_permutation(fraction: float, tile: int = 8) -> np.ndarray:
    """A fixed permutation of the S*S pixels moving ``fraction`` of each tile's pixels in a cycle.

    The same positions move in every tile (aligned with the ViT's patch grid), so the whole
    transform is one permutation of a patch's pixels: exactly what a patch embedding can absorb.
    """
    rng = np.random.default_rng(20261206)
    k = int(round(fraction * tile * tile))
    within = np.arange(tile * tile)
    if k >= 2:
        moved = rng.choice(tile * tile, size=k, replace=False)
        within[moved] = np.roll(moved, 1)
    ty, tx = np.divmod(within, tile)
    oy, ox = np.meshgrid(np.arange(_S // tile) * tile, np.arange(_S // tile) * tile, indexing="ij")
    src = (
        (oy[:, None, :, None] + ty.reshape(tile, tile)[None, :, None, :]) * _S
        + ox[:, None, :, None]
        + tx.reshape(tile, tile)[None, :, None, :]
    )
    return src.reshape(-1)


def _shift_scramble(fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(img: np.ndarray) -> np.ndarray:
        return img.reshape(_S * _S, 3)[_tile_permutation(fraction)].reshape(_S, _S, 3)

    return apply


TASK_SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda img: img,
    "negative": lambda img: 1.0 - img,
    "swap": lambda img: img[..., ::-1],
    "scramble25": _shift_scramble(0.25),
    "scramble50": _shift_scramble(0.5),
    "scramble70": _shift_scramble(0.7),
    "scramble100": _shift_scramble(1.0),
}
TASK_SHIFT = "scramble50"
"""The shift every single-domain task's images pass through (``toy probe --shift`` compares others).

Half of each patch's pixels moved: the probe's choice (README, "The toy world"). ``none`` is the
world before the shift, where θ0's zero-shot sat too close to the experts for merging to show.
"""


@dataclass(frozen=True)
class ToyTask:
    """A classification task of the toy suite: its class names, prompt templates and pixels.

    The dataclass carries exactly what a real dataset registry would (names and prompts,
    docs/METHODS.md §3); the pixels come from the renderer registered under ``name``.
    """

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    renderer: str | None = None
    """Renderer registered under this name (default: the task's own name)."""
    domains: tuple[str, ...] = ()
    """Visual domains (styles from ``DOMAIN_STYLES``) of a multi-domain task, for leave-one-domain-out."""

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def generate(self, split: str, n: int, seed: int, domain: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` examples of ``split``: uint8 images [n, 3, 32, 32] and int64 labels [n].

        Labels are uniform over classes. Example i depends only on (name, domain, split, seed, i),
        so two domains share no example (as DomainNet's domains share classes, not images). A
        multi-domain task without ``domain`` gives its first domain.
        """
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        if domain is not None and domain not in self.domains:
            raise ValueError(
                f"toy task {self.name!r} has no domain {domain!r}; domains: {list(self.domains) or 'none'}"
            )
        domain = domain or (self.domains[0] if self.domains else None)
        render = _RENDERERS[self.renderer or self.name]
        style = DOMAIN_STYLES[domain] if domain is not None else None
        tag = self.name if domain is None else f"{self.name}/{domain}"
        images = np.empty((n, 3, _S, _S), np.uint8)
        labels = np.empty(n, np.int64)
        for i, rng in enumerate(_example_rngs(tag, _SPLITS[split], seed, n)):
            label = int(rng.integers(self.num_classes))
            img = render(rng, label, split)
            if not self.domains:
                img = TASK_SHIFTS[TASK_SHIFT](img)
            images[i] = _to_uint8(style(rng, img) if style is not None else img)
            labels[i] = label
        return images, labels


def _sketch(rng, img: np.ndarray) -> np.ndarray:
    """Dark strokes on paper: the luminance gradient's magnitude, inverted."""
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    gy, gx = np.gradient(grey)
    edges = np.clip(np.hypot(gx, gy) * rng.uniform(3.0, 5.0), 0.0, 1.0)
    paper = rng.uniform(0.85, 1.0)
    return np.repeat((paper * (1.0 - edges))[..., None], 3, axis=2)


def _negative(rng, img: np.ndarray) -> np.ndarray:
    """A photographic negative: every colour inverted."""
    return 1.0 - img


def _mosaic(rng, img: np.ndarray) -> np.ndarray:
    """Coarse tiles: 2×2 pixel blocks averaged (16×16 effective resolution)."""
    blocks = img.reshape(_S // 2, 2, _S // 2, 2, 3).mean(axis=(1, 3))
    return np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)


def _greyscale(rng, img: np.ndarray) -> np.ndarray:
    """Black-and-white with boosted contrast: shape survives, colour does not."""
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = np.clip((grey - grey.mean()) * 1.4 + grey.mean(), 0.0, 1.0)
    return np.repeat(grey[..., None], 3, axis=2)


DOMAIN_STYLES: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "photo": lambda rng, img: img,
    "sketch": _sketch,
    "negative": _negative,
    "mosaic": _mosaic,
    "greyscale": _greyscale,
}


# Prompts speak the pre-training captions' language (frames "a photo of"/"an image of"/"a drawing
# of", the same nouns), as CLIP's prompt templates do for web captions: a tiny text tower does not
# generalise to phrasings it never read.
TOY_TASKS: dict[str, ToyTask] = {
    task.name: task
    for task in (
        ToyTask(
            "digits",
            DIGIT_WORDS,
            ("a photo of the digit {}.", "a handwritten {}.", "the number {}.", "an image of the digit {}."),
        ),
        ToyTask("shapes", SHAPES, ("a photo of a {}.", "a {}.", "a drawing of a {}.", "an image of a {}.")),
        ToyTask(
            "colours",
            COLOUR_TASK_COLOURS,
            ("a photo of a {} shape.", "a {} object.", "a {} shape.", "an image of a {} object."),
        ),
        ToyTask(
            "stripes",
            STRIPE_ORIENTATIONS,
            ("a photo of {} stripes.", "{} stripes.", "{} lines.", "an image of {} lines."),
        ),
        ToyTask(
            "dots",
            tuple(f"{word} dot" if word == "one" else f"{word} dots" for word in COUNT_WORDS),
            ("a photo of {}.", "{}.", "an image of {}.", "a drawing of {}."),
        ),
        ToyTask(
            "position",
            POSITIONS,
            (
                "a shape in the {}.",
                "a photo of a shape in the {}.",
                "an object in the {}.",
                "an image of an object in the {}.",
            ),
        ),
        ToyTask(
            "textures",
            TEXTURES,
            ("a photo of a {} pattern.", "a {} texture.", "a {} pattern.", "an image of a {} texture."),
        ),
        ToyTask(
            "arrows",
            DIRECTIONS,
            (
                "a photo of an arrow pointing {}.",
                "an arrow pointing {}.",
                "a drawing of an arrow pointing {}.",
                "an image of an arrow pointing {}.",
            ),
        ),
        # the multi-domain task (DG): the shapes task in five visual styles
        ToyTask(
            "objects",
            SHAPES,
            ("a photo of a {}.", "a {}.", "a drawing of a {}.", "an image of a {}."),
            renderer="shapes",
            domains=tuple(DOMAIN_STYLES),
        ),
    )
}


# ----------------------------------------------------------------------------------------------
# Pre-training pairs


_FRAMES = ("", "", "a photo of ", "an image of ", "a drawing of ")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _framed(rng, phrase: str) -> str:
    frame = _FRAMES[rng.integers(len(_FRAMES))]
    return f"{frame}{phrase}" + ("." if rng.random() < 0.5 else "")


def _one_of(rng, options) -> str:
    return str(options[rng.integers(len(options))])


def _pretrain_clutter(rng) -> float:
    """Pre-training style: mostly clean, sometimes as cluttered as the tasks (the bridge to them)."""
    return 0.0 if rng.random() < 0.5 else float(rng.uniform(0.0, 0.7))


def _pair_object(rng) -> tuple[np.ndarray, str]:
    """A shape anywhere; its caption names one or two of shape, colour, size and position."""
    c = _pretrain_clutter(rng)
    shape = SHAPES[rng.integers(len(SHAPES))]
    small = rng.random() < 0.5
    pos = int(rng.integers(len(POSITIONS)))
    if small:
        r = rng.uniform(3.5, 6.0)
        cx, cy = _position_centre(rng, pos, 2.0)
    else:
        r = rng.uniform(8.0, 12.0)
        cx, cy = _centre(rng, 3.0)
    _, bg = _random_colour(rng)
    colour_name, colour = _contrasting(rng, bg, 0.9)
    img = _draw_object(rng, shape, colour, cx, cy, r, c, bg)
    coloured = f"{_article(colour_name)} {colour_name}"
    options = [f"a {shape}", f"{coloured} {shape}", f"{coloured} shape", f"{coloured} object"]
    if small:
        where = f"in the {POSITIONS[pos]}"
        options += [f"a shape {where}", f"an object {where}", f"a {shape} {where}", f"{coloured} {shape} {where}"]
    return _finish(rng, img, c), _framed(rng, _one_of(rng, options))


def _pair_digit(rng) -> tuple[np.ndarray, str]:
    c = _pretrain_clutter(rng)
    label = int(rng.integers(10))
    img, _ = _draw_digit(rng, label, "train", c, (22.0, 30.0), 3.0)
    word = DIGIT_WORDS[label]
    phrase = _one_of(rng, (f"the digit {word}", f"a handwritten {word}", f"the number {word}"))
    return _finish(rng, img, c), _framed(rng, phrase)


def _pair_stripes(rng) -> tuple[np.ndarray, str]:
    c = _pretrain_clutter(rng)
    orientation = STRIPE_ORIENTATIONS[rng.integers(len(STRIPE_ORIENTATIONS))]
    img, _, _ = _draw_stripes(rng, orientation, c, patch=rng.random() < 0.25)
    phrase = _one_of(rng, (f"{orientation} stripes", f"{orientation} lines"))
    return _finish(rng, img, c), _framed(rng, phrase)


def _pair_dots(rng) -> tuple[np.ndarray, str]:
    c = _pretrain_clutter(rng)
    count = int(rng.integers(1, len(COUNT_WORDS) + 1))
    img, _ = _draw_dots(rng, count, c, uniform=rng.random() < 0.7)
    phrase = f"{COUNT_WORDS[count - 1]} {'dot' if count == 1 else 'dots'}"
    return _finish(rng, img, c), _framed(rng, phrase)


def _pair_texture(rng) -> tuple[np.ndarray, str]:
    c = _pretrain_clutter(rng)
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    img, _, _ = _draw_texture(rng, texture, c)
    phrase = _one_of(rng, (f"a {texture} pattern", f"a {texture} texture"))
    return _finish(rng, img, c), _framed(rng, phrase)


def _pair_arrow(rng) -> tuple[np.ndarray, str]:
    c = _pretrain_clutter(rng)
    direction = DIRECTIONS[rng.integers(len(DIRECTIONS))]
    img, _ = _draw_arrow(rng, direction, c, (10.0, 14.0), 3.0)
    return _finish(rng, img, c), _framed(rng, f"an arrow pointing {direction}")


# Shares roughly follow how hard a concept is to learn (digits and arrows need the most views).
_PAIR_SOURCES: tuple[tuple[Callable, float], ...] = (
    (_pair_object, 0.3),
    (_pair_digit, 0.2),
    (_pair_stripes, 0.07),
    (_pair_dots, 0.13),
    (_pair_texture, 0.12),
    (_pair_arrow, 0.18),
)


def pretraining_pairs(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` image-caption pairs for θ0's contrastive pre-training: uint8 [n, 3, 32, 32], captions.

    A distribution of its own (its own random streams, cleaner images, compositional captions)
    that names the concepts the tasks' class names use, as web captions do for CLIP.
    """
    weights = np.array([w for _, w in _PAIR_SOURCES])
    cumulative = np.cumsum(weights / weights.sum())
    images = np.empty((n, 3, _S, _S), np.uint8)
    captions: list[str] = []
    for i, rng in enumerate(_example_rngs(_PRETRAINING_TAG, 0, seed, n)):
        pick = min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(_PAIR_SOURCES) - 1)
        source = _PAIR_SOURCES[pick][0]
        img, caption = source(rng)
        images[i] = _to_uint8(img)
        captions.append(caption)
    return images, captions
