"""Trials stage: task-vector banks and their routes to the workers (``banks``), merge-and-evaluate
(``merge_eval``, ``evaluation``, ``eval_cache``), the Ray Tune grid (``grid``) and per-trial limits
(``limits``)."""
