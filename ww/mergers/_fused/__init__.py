"""Compiled twins and one-pass forms of the base mergers, kept apart from their readable definitions.

Each module here mirrors ``ww/mergers/<name>.py``: the same block arithmetic written for
``torch.compile`` (masks by ``where``, task loops unrolled) and, where a merger has one, its
one-pass form on resident banks (`ww.engine.speculation`). The readable block function in
``ww/mergers/<name>.py`` is the reference: the tests check every twin against it, and `ww.kernels`
decides which of the two runs. Nothing here is imported by users.
"""
