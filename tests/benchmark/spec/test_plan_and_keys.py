"""Plans and content keys: the same work gets the same key; any change to its inputs changes it."""

from __future__ import annotations

from benchmark.spec.keys import content_key
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import parse_spec
from tests.conftest import tiny_spec_dict


def test_content_key_is_order_independent_and_kind_scoped():
    assert content_key("a", {"x": 1, "y": 2}) == content_key("a", {"y": 2, "x": 1})
    assert content_key("a", {"x": 1}) != content_key("b", {"x": 1})


def test_plan_expands_axes_and_baseline_has_no_variant():
    spec = parse_spec(tiny_spec_dict(variants=["collaborative", "plain"], seeds=[0, 1]))
    plan = build_plan(spec)
    assert len(plan.experts) == 3 * 2  # tasks × seeds
    # per seed and merger: none (1) + avg × 2 variants + randmix × 2 variants = 5
    assert len(plan.trials) == 2 * 2 * 5
    baselines = [t for t in plan.trials if t.pooling == "none"]
    assert all(t.collaborative is None and t.lam == 1.0 and t.lambda_policy == "fixed" for t in baselines)
    assert len({t.key for t in plan.trials}) == len(plan.trials)


def test_keys_are_stable_across_plans_and_change_with_inputs():
    first = build_plan(parse_spec(tiny_spec_dict()))
    again = build_plan(parse_spec(tiny_spec_dict()))
    assert [t.key for t in first.trials] == [t.key for t in again.trials]
    changed = tiny_spec_dict()
    changed["setups"][0]["finetune"]["lr"] = 2e-4
    other = build_plan(parse_spec(changed))
    assert {e.key for e in other.experts}.isdisjoint({e.key for e in first.experts})
    assert {t.key for t in other.trials}.isdisjoint({t.key for t in first.trials})


def test_run_name_does_not_change_keys():
    a = build_plan(parse_spec(tiny_spec_dict(name="one")))
    b = build_plan(parse_spec(tiny_spec_dict(name="two")))
    assert [t.key for t in a.trials] == [t.key for t in b.trials]


def test_weaving_trials_carry_the_default_grid():
    plan = build_plan(parse_spec(tiny_spec_dict()))
    ties_avg = next(t for t in plan.trials if t.merger == "ties" and t.pooling == "avg")
    assert ties_avg.lambdas[0] == 0.1 and ties_avg.lambdas[-1] == 1.8 and len(ties_avg.lambdas) == 18
