"""A trial worker merges trial after trial: ``run_trial`` declares it (``ww.kernels.expect_many_merges``),
so ``auto`` may compile there, while a one-shot ``ww.merge`` in a script never pays a cold compile."""

from __future__ import annotations

import pytest

import ww
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import parse_spec
from benchmark.trials import merge_eval
from tests.conftest import tiny_spec_dict


class _Seen(Exception):
    pass


def test_run_trial_merges_inside_expect_many_merges(monkeypatch):
    seen = []

    def record(bank, experts):
        seen.append(ww.kernels.many_merges_expected())
        raise _Seen

    monkeypatch.setattr(merge_eval, "_sub_bank", record)
    trial = build_plan(parse_spec(tiny_spec_dict())).trials[0]
    assert not ww.kernels.many_merges_expected()
    with pytest.raises(_Seen):
        merge_eval.run_trial(trial, bank=None, assets=None, storage=None, references={})
    assert seen == [True]
    assert not ww.kernels.many_merges_expected()  # the declaration ends with the trial
