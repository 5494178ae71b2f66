"""Prompt templates of the real datasets (format strings with one ``{}`` for the class name).

docs/METHODS.md §3 builds each head by averaging the text embeddings of every template. The sets are the
ones CLIP's authors engineered per dataset (OpenAI CLIP, ``data/prompts.md``), which the
task-vector papers reuse unchanged, so zero-shot accuracies are comparable with theirs. The
ImageNet-derived and multi-domain datasets (ImageNet-R, DomainNet, PACS, OfficeHome) use CLIP's
80 ImageNet templates, read from open_clip — they already name renditions (sketch, painting,
cartoon, origami, ...), which is what these datasets vary.
"""

from __future__ import annotations

from functools import lru_cache

PHOTO = ("a photo of a {}.", "a photo of the {}.")

NUMBER = ('a photo of the number: "{}".',)

CIFAR = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)

CARS = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of my {}.",
    "i love my {}!",
    "a photo of my dirty {}.",
    "a photo of my clean {}.",
    "a photo of my new {}.",
    "a photo of my old {}.",
)

DTD = (
    "a photo of a {} texture.",
    "a photo of a {} pattern.",
    "a photo of a {} thing.",
    "a photo of a {} object.",
    "a photo of the {} texture.",
    "a photo of the {} pattern.",
    "a photo of the {} thing.",
    "a photo of the {} object.",
)

EUROSAT = (
    "a centered satellite photo of {}.",
    "a centered satellite photo of a {}.",
    "a centered satellite photo of the {}.",
)

GTSRB = (
    'a zoomed in photo of a "{}" traffic sign.',
    'a centered photo of a "{}" traffic sign.',
    'a close up photo of a "{}" traffic sign.',
)

RESISC45 = tuple(
    f"{kind} {what} of {article}{{}}."
    for article in ("", "a ", "the ")
    for kind, what in (
        ("satellite", "imagery"),
        ("aerial", "imagery"),
        ("satellite", "photo"),
        ("aerial", "photo"),
        ("satellite", "view"),
        ("aerial", "view"),
    )
)

FLOWERS102 = ("a photo of a {}, a type of flower.",)

FOOD101 = ("a photo of {}, a type of food.",)

OXFORD_PETS = ("a photo of a {}, a type of pet.",)

PCAM = ("this is a photo of {}",)

FER2013 = (
    "a photo of a {} looking face.",
    "a photo of a face showing the emotion: {}.",
    "a photo of a face looking {}.",
    "a face that looks {}.",
    "they look {}.",
    "look at how {} they are.",
)

RENDERED_SST2 = ("a {} review of a movie.",)

EMNIST = ('a photo of the digit character: "{}".',)

KMNIST = ("a photo of the character {}.",)


@lru_cache(maxsize=1)
def imagenet() -> tuple[str, ...]:
    """CLIP's 80 ImageNet templates as format strings (open_clip stores them as lambdas)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)
