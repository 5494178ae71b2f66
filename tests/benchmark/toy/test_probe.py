"""The toy probe's defaults are the presets' recipes, so `toy probe` with no option measures the shipped world."""

from pathlib import Path

from benchmark.spec.schema import load_spec
from benchmark.toy.probe import MTL_TASKS, _parser

PRESETS = Path(__file__).resolve().parents[3] / "benchmark" / "spec" / "presets"


def test_probe_defaults_are_the_toy_presets_recipes():
    args = _parser().parse_args([])
    [mtl] = load_spec(PRESETS / "quickstart.yaml").setups
    assert (tuple(mtl.tasks), mtl.finetune.steps, mtl.finetune.lr) == (MTL_TASKS, args.steps, args.lr)
    assert (mtl.finetune.batch_size, mtl.finetune.warmup) == (args.batch_size, args.warmup)
    for cil in load_spec(PRESETS / "toy_cil.yaml").setups:
        assert (cil.dataset, cil.n_splits, cil.finetune.epochs, cil.finetune.lr) == (
            args.cil_dataset,
            args.cil_splits,
            args.cil_epochs,
            args.cil_lr,
        )
    [dg] = load_spec(PRESETS / "toy_dg.yaml").setups
    assert (dg.finetune.steps, dg.finetune.lr) == (args.steps, args.dg_lr)
