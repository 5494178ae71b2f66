"""The paper's specs and their toy counterparts: what they plan, that they agree, that the toys run.

The paper specs cannot run here (no GPUs, no 100 GB of data), so their plans are checked against the
arithmetic each file states in its header, against each other (paper.yaml is the union of the
per-setup files, the single-model files are slices of them), and through the code paths that
rebuild a recipe from its dump on a worker. The toy specs are run for real, reduced to test sizes.
"""

from __future__ import annotations

import math
import re
import time

import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from benchmark import cli
from benchmark.data import MTL8, fake
from benchmark.data import loaders as data
from benchmark.experts.training import _recipe
from benchmark.results.storage import StorageRoot
from benchmark.results.store import read_results
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import NO_POOLING, ORACLE, PRESETS, SetupSpec, load_spec, parse_spec
from benchmark.trials.merge_eval import base_row

SPECS = PRESETS
PAPER = ("paper", "paper_mtl", "paper_cil", "paper_dg")
PAPER_MODELS = [("ViT-B-32", "openai"), ("ViT-B-16", "openai"), ("ViT-L-14", "openai")]
PAPER_MERGERS = {"breadcrumbs", "magmax", "ties", "pcb", "tsv_m", "iso_c", "task_arithmetic", "consensus"}
SLICES = {"mtl8": "paper_mtl", "cil_cifar100": "paper_cil", "dg_domainnet": "paper_dg"}
TOYS = ("toy_mtl", "toy_cil", "toy_dg")
METHODS_EPOCHS = {
    "Cars": 35,
    "DTD": 75,
    "EuroSAT": 12,
    "GTSRB": 11,
    "MNIST": 5,
    "RESISC45": 15,
    "SUN397": 14,
    "SVHN": 4,
}


def _stated_plan(name: str) -> tuple[int, int]:
    """The ``# plan: N experts, M trials`` line of a spec's header."""
    match = re.search(r"^# plan: (\d+) experts, (\d+) trials", (SPECS / f"{name}.yaml").read_text(), re.M)
    assert match, f"{name}.yaml states no '# plan: N experts, M trials' line"
    return int(match[1]), int(match[2])


def _arithmetic(spec) -> tuple[int, int]:
    """Experts and trials by the rule the headers spell out: one expert per (model, seed, expert task);
    per (model, setup, seed, merger) one trial for none and oracle and one per variant otherwise."""
    per_merger = sum(1 if p in (NO_POOLING, ORACLE) else len(spec.variants) for p in spec.poolings)
    experts = len(spec.models) * len(spec.seeds) * sum(len(s.expert_tasks()) for s in spec.setups)
    trials = len(spec.models) * len(spec.seeds) * len(spec.setups) * len(spec.mergers) * per_merger
    return experts, trials


@pytest.mark.parametrize("name", PAPER + tuple(SLICES) + TOYS)
def test_plan_size_is_the_one_the_header_states(name):
    spec = load_spec(SPECS / f"{name}.yaml")
    plan = build_plan(spec)
    assert (len(plan.experts), len(plan.trials)) == _stated_plan(name) == _arithmetic(spec)


def test_paper_covers_the_papers_grid():
    spec = load_spec(SPECS / "paper.yaml")
    assert [(m.name, m.pretrained) for m in spec.models] == PAPER_MODELS
    assert {m.name for m in spec.mergers} == PAPER_MERGERS
    assert spec.poolings == ["none", "oracle", "avg", "randmix", "magmax"]
    assert spec.variants == ["collaborative", "plain"] and spec.seeds == [0, 1, 2] and spec.fixed_lambda == 1.0
    setups = {s.name: s for s in spec.setups}
    assert tuple(setups["mtl8"].tasks) == MTL8
    assert setups["mtl8"].finetune.epochs == METHODS_EPOCHS
    seq, ind = setups["cil-cifar100-20"], setups["cil-cifar100-20-independent"]
    assert (seq.dataset, seq.n_splits, seq.finetune.mode, seq.finetune.epochs) == ("CIFAR100", 20, "sequential", 10)
    # the independent counterpart differs by its mode only, or the comparison would compare recipes
    assert (
        ind.model_copy(update={"name": seq.name, "finetune": ind.finetune.model_copy(update={"mode": "sequential"})})
        == seq
    )
    assert len(setups["dg-domainnet"].expert_tasks()) == 6 and len(setups["dg-imagenet-r"].expert_tasks()) == 15
    for setup in spec.setups:  # docs/METHODS.md §3 recipe, global batch 128 over the data-parallel workers
        ft = setup.finetune
        assert (ft.lr, ft.weight_decay, ft.warmup, ft.grad_clip) == (1e-5, 0.1, 500, 1.0)
        assert ft.batch_size * spec.resources.expert_workers == 128


def test_paper_is_the_union_of_the_per_setup_specs():
    whole = build_plan(load_spec(SPECS / "paper.yaml"))
    parts = [build_plan(load_spec(SPECS / f"{name}.yaml")) for name in PAPER[1:]]
    assert {e.key for e in whole.experts} == {e.key for p in parts for e in p.experts}
    assert {t.key for t in whole.trials} == {t.key for p in parts for t in p.trials}
    assert all(load_spec(SPECS / f"{n}.yaml").resources == whole.spec.resources for n in PAPER[1:])


@pytest.mark.parametrize("name", sorted(SLICES))
def test_single_model_specs_are_slices_of_the_paper_specs(name):
    """Running mtl8.yaml first and paper_mtl.yaml later must not train or evaluate anything twice."""
    part = build_plan(load_spec(SPECS / f"{name}.yaml"))
    whole = build_plan(load_spec(SPECS / f"{SLICES[name]}.yaml"))
    assert [(m.name, m.pretrained) for m in part.spec.models] == [("ViT-B-32", "openai")]
    assert {e.key for e in part.experts} <= {e.key for e in whole.experts}
    assert {t.key for t in part.trials} <= {t.key for t in whole.trials}


@pytest.mark.parametrize("name", PAPER)
def test_workers_rebuild_epoch_sized_recipes_from_the_plan(name):
    """Trials and Ray Train workers get setups and recipes as dumps; an epochs-sized one must come
    back as it was, and its steps count the global batch of the data-parallel workers."""
    spec = load_spec(SPECS / f"{name}.yaml")
    plan = build_plan(spec)
    for setup in spec.setups:
        assert SetupSpec(**setup.model_dump(mode="json")) == setup
    for trial in plan.trials[:: len(spec.mergers) * 8]:
        assert base_row(trial)["setup"] == trial.setup["name"]
    finetune = {s.name: s.finetune for s in spec.setups}
    for job in plan.experts[::7]:
        recipe = _recipe(job, n_train=2250, world=spec.resources.expert_workers, rank=0)
        epochs = finetune[job.setup].epochs_for(data.parse_task(job.task).dataset)
        assert recipe.steps == math.ceil(epochs * 2250 / 128)


@pytest.fixture(scope="module")
def machine_with_paper_inputs(tmp_path_factory):
    """A data root with fakes of every dataset the paper reads, and a hub cache with the 3 openai ViTs."""
    root = tmp_path_factory.mktemp("paper-machine")
    for name in (*MTL8, "CIFAR100", "DomainNet", "ImageNet-R"):
        fake.write_fake(name, root / "data")
    for repo in ("vit_base_patch32_clip_224", "vit_base_patch16_clip_224", "vit_large_patch14_clip_224"):
        folder = root / "hub" / f"models--timm--{repo}.openai"
        (folder / "snapshots" / "c0ffee").mkdir(parents=True)
        (folder / "snapshots" / "c0ffee" / "open_clip_model.safetensors").write_bytes(b"stand-in: resolved, not read")
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("c0ffee")
    return root


def test_paper_spec_dry_runs_with_its_inputs_in_place(machine_with_paper_inputs, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WW_DATA_ROOT", str(machine_with_paper_inputs / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(machine_with_paper_inputs / "hub"))
    with fake.skip_torchvision_md5():
        assert cli.main(["run", str(SPECS / "paper.yaml"), "--dry-run", "--root", str(tmp_path)]) == 0
    assert "--dry-run" in capsys.readouterr().out


def test_paper_spec_is_refused_without_its_inputs(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WW_DATA_ROOT", str(tmp_path / "no-data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    assert cli.main(["run", str(SPECS / "paper.yaml"), "--dry-run", "--root", str(tmp_path / "root")]) == 2
    assert "vit_base_patch32_clip_224.openai" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# toy counterparts


@pytest.mark.parametrize("name", TOYS)
def test_toy_specs_share_the_quickstarts_theta0_and_sweep_the_oracle(name):
    quickstart = load_spec(SPECS / "quickstart.yaml")
    spec = load_spec(SPECS / f"{name}.yaml")
    assert spec.models == quickstart.models  # same pre-training entry: θ0 comes from the same cache entry
    assert build_plan(spec).trials[0].base_key == build_plan(quickstart).trials[0].base_key
    assert ORACLE in spec.poolings and NO_POOLING in spec.poolings  # λ curves and the baseline
    assert {m.name for m in spec.mergers} == PAPER_MERGERS and spec.variants == ["collaborative", "plain"]


def test_toy_mtl_reuses_the_quickstarts_experts():
    quickstart, toy = (build_plan(load_spec(SPECS / f"{n}.yaml")) for n in ("quickstart", "toy_mtl"))
    assert {e.key for e in toy.experts} == {e.key for e in quickstart.experts}


def test_toy_cil_fine_tunes_one_setup_both_ways_and_toy_dg_leaves_each_domain_out():
    seq, ind = load_spec(SPECS / "toy_cil.yaml").setups
    assert (seq.kind, seq.dataset, seq.n_splits, seq.finetune.mode, ind.finetune.mode) == (
        "cil",
        "shapes",
        4,
        "sequential",
        "independent",
    )
    assert (ind.data, ind.finetune.model_copy(update={"mode": "sequential"})) == (seq.data, seq.finetune)
    assert [e.task for e in seq.evaluations()] == ["shapes"]
    [dg] = load_spec(SPECS / "toy_dg.yaml").setups
    assert dg.expert_tasks() == [f"objects/{d}" for d in ("photo", "sketch", "negative", "mosaic", "greyscale")]
    assert [len(e.experts) for e in dg.evaluations()] == [4] * 5


# ---------------------------------------------------------------------------------------------
# toy CIL and DG end to end, at test sizes


REDUCED_DOMAINS = ("photo", "sketch", "negative")


def _reduced(name: str) -> dict:
    """A toy spec at test sizes: the file's setups and axes with fewer experts (2 class splits, 3
    domains: Ray Train's per-expert start-up dominates at these sizes), tiny pre-training, data and
    fine-tunes."""
    spec = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    spec["name"] = f"{spec['name']}-reduced"
    spec["models"][0]["pretrain"] = {"steps": 40, "batch_size": 64, "n_pairs": 2000, "warmup": 5}
    for setup in spec["setups"]:
        setup["data"] = {"n_train": 256, "n_test": 128, "seed": 0}
        if setup["kind"] == "cil":
            setup["n_splits"] = 2
        if setup["kind"] == "dg":
            setup["domains"] = list(REDUCED_DOMAINS)
        finetune = setup["finetune"]
        finetune.update(batch_size=32, lr=1e-4, warmup=2, checkpoint_every=0)  # resume is tested elsewhere
        if "epochs" in finetune:  # keep the epochs path: ≈ 128 examples per split × 2 epochs / 32 = 8 steps
            finetune["epochs"] = 2
        else:
            finetune["steps"] = 8
    spec.update(
        mergers=["task_arithmetic"],
        poolings=["none", "oracle", "avg"],
        variants=["collaborative"],
        resources={"prepare_cpus": 1, "trial_cpus": 1},
    )
    return spec


@pytest.fixture(scope="module")
def toy_cil_and_dg_run(ray_session, tmp_path_factory):
    """The reduced toy CIL (both modes) and toy DG specs run into one root, as the README does."""
    from benchmark.pipeline import run_spec

    folder = tmp_path_factory.mktemp("toy-paper")
    storage = StorageRoot.at(folder / "root")
    paths, summaries = {}, {}
    for name in ("toy_cil", "toy_dg"):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(_reduced(name)))
        start = time.perf_counter()
        summaries[name] = run_spec(parse_spec(_reduced(name)), storage, console=Console(record=True, width=200))
        print(f"reduced {name}: {time.perf_counter() - start:.0f} s {summaries[name].seconds}")
    return storage, paths, summaries


def test_toy_cil_and_dg_run_every_planned_trial(toy_cil_and_dg_run):
    storage, _, summaries = toy_cil_and_dg_run
    for summary in summaries.values():
        assert not summary.experts_failed and not summary.trials_blocked
        assert summary.trials_run == len(summary.plan.trials)


def test_cil_evaluates_the_whole_dataset_and_dg_each_held_out_domain(toy_cil_and_dg_run):
    storage, _, _ = toy_cil_and_dg_run
    rows = [
        r
        for r in read_results(storage).to_pylist()
        if r["lambda_policy"] in ("fixed", "weave", "oracle") and r["status"] == "ok"
    ]
    by_trial: dict[str, list[dict]] = {}
    for row in rows:
        by_trial.setdefault(row["trial_key"], []).append(row)
    kinds = {}
    for trial_rows in by_trial.values():
        first = trial_rows[0]
        kinds.setdefault(first["setup"], set()).add(first["finetune_mode"])
        lams = {r["lam"] for r in trial_rows}
        per_lam = [r for r in trial_rows if r["lam"] == next(iter(lams))]
        if first["setup_kind"] == "cil":  # task-agnostic: one eval, the whole 8-class test set, every split's expert
            assert [(r["eval_task"], r["n_tasks"], r["n_examples"]) for r in per_lam] == [("shapes", 2, 128)]
        else:  # one merge of the other experts per held-out domain, evaluated on that domain
            assert sorted(r["eval_task"] for r in per_lam) == sorted(f"objects/{d}" for d in REDUCED_DOMAINS)
            assert {r["n_tasks"] for r in per_lam} == {len(REDUCED_DOMAINS) - 1}
        if first["lambda_policy"] == "oracle":
            assert len(lams) == len(first["lambdas"]) and all(r["uses_test_data"] for r in trial_rows)
    assert kinds == {
        "toy-cil-sequential": {"sequential"},
        "toy-cil-independent": {"independent"},
        "toy-dg-objects": {"independent"},
    }


def test_report_renders_every_paper_table_and_figure(toy_cil_and_dg_run, tmp_path):
    storage, _, _ = toy_cil_and_dg_run
    figures = tmp_path / "figures"
    out = tmp_path / "tables.md"
    assert (
        cli.main(
            [
                "report",
                str(storage.root),
                "--table",
                "all",
                "--format",
                "markdown",
                "--out",
                str(out),
                "--figures",
                str(figures),
            ]
        )
        == 0
    )
    text = out.read_text()
    for setup in ("toy-cil-sequential", "toy-cil-independent", "toy-dg-objects"):
        assert setup in text
    assert "test data" in text  # the oracle table says what it used
    assert "| balanced % |" in text  # DG's balanced accuracy in the leaderboard
    assert "gain 95% CI" in text and re.search(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", text)  # paired intervals
    names = sorted(p.name for p in figures.glob("*.png"))
    assert names == [
        "best_lambda_ww-toy-vit.png",
        "lambda_curves_ww-toy-vit_toy-cil-independent.png",
        "lambda_curves_ww-toy-vit_toy-cil-sequential.png",
        "lambda_curves_ww-toy-vit_toy-dg-objects.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in figures.glob("*.png"))


def test_analyze_answers_the_sequential_vs_independent_question(toy_cil_and_dg_run, capsys):
    storage, paths, _ = toy_cil_and_dg_run
    capsys.readouterr()
    assert cli.main(["analyze", str(paths["toy_cil"]), "--root", str(storage.root)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    [row] = pq.read_table(storage.root / "analysis" / "toy-cil-reduced" / "geometry_comparison.parquet").to_pylist()
    assert (row["sequential_setup"], row["independent_setup"]) == ("toy-cil-sequential", "toy-cil-independent")
    assert row["answer"] in printed
    assert re.match(r"sequential task vectors are (more|less) correlated than independent", row["answer"])
    assert cli.main(["analyze", str(paths["toy_dg"]), "--root", str(storage.root)]) == 0
    written = {p.name.split("-")[0] for p in (storage.root / "analysis" / "toy-dg-reduced").glob("*.png")}
    assert written == {"geometry", "interference", "output_space", "scale"}
