"""The embedded toy world: a tiny open_clip CLIP, an offline image suite and its pre-training.

Everything the quickstart needs without a download (docs/DESIGN.md, "The embedded default"); the
rest of the harness treats the toy model and tasks like any other model and dataset.
"""

from benchmark.toy.model import TOY_MODEL, create_toy_model, register_toy_model, toy_tokenizer
from benchmark.toy.pretrain import PretrainRecipe, pretrain
from benchmark.toy.suite import TOY_IMAGE_SIZE, TOY_TASKS, ToyTask, pretraining_pairs

__all__ = [
    "TOY_IMAGE_SIZE",
    "TOY_MODEL",
    "TOY_TASKS",
    "PretrainRecipe",
    "ToyTask",
    "create_toy_model",
    "pretrain",
    "pretraining_pairs",
    "register_toy_model",
    "toy_tokenizer",
]
