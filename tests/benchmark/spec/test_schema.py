"""Spec validation at the boundary: bad specs fail with messages that name the problem and the fix."""

from __future__ import annotations

import copy

import pytest

from benchmark.spec.schema import SpecError, load_spec, parse_spec, quickstart_spec_path
from tests.conftest import tiny_spec_dict


def _error(spec: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(spec, "spec.yaml")
    return str(info.value)


def test_quickstart_spec_is_valid():
    spec = load_spec(quickstart_spec_path())
    assert spec.models[0].pretrained == "toy"
    assert len(spec.setups[0].tasks) >= 6
    assert "none" in spec.poolings


def test_unknown_key_suggests_the_closest_valid_key():
    spec = tiny_spec_dict()
    spec["mergerz"] = spec.pop("mergers")
    message = _error(spec)
    assert "unknown key 'mergerz'" in message and "did you mean 'mergers'" in message


def test_unknown_nested_key_names_its_location():
    spec = tiny_spec_dict()
    spec["setups"][0]["finetune"]["stepz"] = 3
    message = _error(spec)
    assert "setups.0.finetune.stepz" in message and "'steps'" in message


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s["mergers"].append("tiess"), "did you mean 'ties'"),
        (lambda s: s.__setitem__("poolings", ["avg", "avgg"]), "unknown pooling 'avgg'"),
        (lambda s: s.__setitem__("poolings", ["avg", "avg"]), "duplicated poolings"),
        (lambda s: s.__setitem__("seeds", []), "seeds"),
        (lambda s: s["setups"][0].__setitem__("tasks", ["nope", "other"]), "unknown dataset 'nope'"),
        (lambda s: s["models"][0].__setitem__("name", "ViT-B-32"), "pretrained: toy needs model"),
        (lambda s: s["setups"][0]["finetune"].__setitem__("steps", 0), "greater than or equal to 1"),
        (lambda s: s["mergers"].__setitem__(0, {"name": "ties", "lambdas": []}), "lambdas is empty"),
        (lambda s: s.__setitem__("variants", ["collab"]), "variants"),
        (lambda s: s["setups"][0]["finetune"].__setitem__("epochs", 2), "give steps or epochs, not both"),
        (
            lambda s: (
                s["setups"][0]["finetune"].update(steps=None)
                or s["setups"][0]["finetune"].pop("steps")
                or s["setups"][0]["finetune"].__setitem__("epochs", {"digits": 3})
            ),
            "no entry for 'shapes'",
        ),
        (
            lambda s: (
                s["setups"][0]["finetune"].pop("steps")
                and s["setups"][0]["finetune"].__setitem__("epochs", {"default": -1})
            ),
            "epochs must be positive",
        ),
        (lambda s: s["setups"][0]["finetune"].__setitem__("precision", "fp8"), "precision"),
    ],
)
def test_malformed_specs_are_refused(mutate, expected):
    spec = copy.deepcopy(tiny_spec_dict())
    mutate(spec)
    assert expected in _error(spec)


def test_missing_spec_file_says_what_to_pass(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


def test_per_dataset_epochs_and_checkpointing_stay_out_of_the_expert_key():
    from benchmark.spec.plan import build_plan

    spec = tiny_spec_dict()
    finetune = spec["setups"][0]["finetune"]
    del finetune["steps"]
    finetune["epochs"] = {"digits": 3, "default": 1.5}
    setup = parse_spec(spec).setups[0]
    assert setup.finetune.epochs_for("digits") == 3 and setup.finetune.epochs_for("shapes") == 1.5
    keys = [e.key for e in build_plan(parse_spec(spec)).experts]
    finetune["checkpoint_every"] = 7  # cannot change the weights: same experts
    assert [e.key for e in build_plan(parse_spec(spec)).experts] == keys
    finetune["epochs"]["default"] = 2  # changes what is trained: new experts
    assert [e.key for e in build_plan(parse_spec(spec)).experts] != keys
