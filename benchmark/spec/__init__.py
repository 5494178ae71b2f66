"""Spec stage: the YAML schema (``schema``), its expansion into a plan of content-keyed jobs and trials
(``plan``, ``keys``), and the shipped preset specs (``presets/*.yaml``)."""
