"""Experts stage: the fine-tuning recipe (``finetune``), its Ray Train driver (``training``) and the
content-addressed expert store (``store``)."""
