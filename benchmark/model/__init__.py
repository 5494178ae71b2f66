"""Model stage: open_clip models and pretrained-weight resolution (``pretrained``), zero-shot heads
(``heads``, ``head_cache``) and the prepare stage that readies θ0, heads and eval tensors (``prepare``)."""
