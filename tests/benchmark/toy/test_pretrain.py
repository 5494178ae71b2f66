"""Pre-training and expert fine-tuning: they learn, they are deterministic, and fine-tuning moves
only the image encoder (the premise of task vectors over ``model.visual``)."""

import copy
import dataclasses

import pytest
import torch

from benchmark.experts.finetune import (
    FinetuneRecipe,
    autocast_dtype,
    finetune_image_encoder,
    freeze_all_but_image_encoder,
    steps_for_epochs,
    warmup_cosine,
)
from benchmark.model.heads import zeroshot_head
from benchmark.toy import TOY_TASKS, create_toy_model, toy_tokenizer
from benchmark.toy.pretrain import PretrainRecipe, multi_positive_clip_loss, pretrain


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10) == 0.1
    assert warmup_cosine(9, 100, 10) == 1.0
    assert warmup_cosine(10, 100, 10) == 1.0
    assert abs(warmup_cosine(55, 100, 10) - 0.5) < 1e-9
    assert warmup_cosine(100, 100, 10) == 0.0


def test_multi_positive_loss_counts_same_caption_images_as_positives():
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    index = torch.tensor([0, 0, 1])
    aligned = multi_positive_clip_loss(features, texts, index, torch.tensor(50.0))
    swapped = multi_positive_clip_loss(features, texts.flip(0), index, torch.tensor(50.0))
    # The two images captioned 0 are not each other's negatives: the aligned loss is ~0, where a
    # plain one-positive CLIP loss would stay at log 2 for them however well the towers agree.
    assert aligned < 0.01
    assert swapped > 10.0


def test_short_pretraining_lowers_the_loss():
    torch.manual_seed(0)
    model = create_toy_model(seed=0)
    recipe = PretrainRecipe(steps=40, batch_size=64, lr=2e-3, warmup=5, n_pairs=256, seed=0)
    metrics = pretrain(model, recipe)
    assert metrics["final_loss"] < metrics["first_loss"] - 0.3
    assert not model.training
    assert metrics["logit_scale"] <= 100.0 + 1e-3


def test_pretraining_is_deterministic():
    recipe = PretrainRecipe(steps=3, batch_size=16, n_pairs=64, warmup=1, seed=1)
    a, b = create_toy_model(seed=0), create_toy_model(seed=0)
    pretrain(a, recipe)
    pretrain(b, recipe)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def _expert_inputs(model, n=48):
    task = TOY_TASKS["shapes"]
    head = zeroshot_head(model, toy_tokenizer(), task.classnames, task.templates)
    images, labels = task.generate("train", n, seed=0)
    return head, images, labels


def test_finetuning_moves_only_the_image_encoder():
    model = create_toy_model(seed=0)
    head, images, labels = _expert_inputs(model)
    head_before = head.clone()
    before = copy.deepcopy(model.state_dict())
    recipe = FinetuneRecipe(steps=3, batch_size=16, lr=1e-3, warmup=1)
    metrics = finetune_image_encoder(model, head, images, labels, recipe)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("visual.") for k in changed), sorted(changed)
    assert torch.equal(before["logit_scale"], after["logit_scale"])
    assert torch.equal(head, head_before)
    assert metrics["steps"] == 3 and metrics["seconds"] > 0
    assert not model.training


def test_finetuning_learns_and_is_deterministic():
    base = create_toy_model(seed=0)
    head, images, labels = _expert_inputs(base, n=64)
    recipe = FinetuneRecipe(steps=25, batch_size=32, lr=2e-3, warmup=2, seed=0)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    metrics = finetune_image_encoder(a, head, images, labels, recipe)
    finetune_image_encoder(b, head, images, labels, recipe)
    assert metrics["final_loss"] < metrics["first_loss"]
    for pa, pb in zip(a.visual.parameters(), b.visual.parameters()):
        assert torch.equal(pa, pb)


class _Wrapper(torch.nn.Module):
    """Stands in for DistributedDataParallel: holds the model in ``.module``, forwards to it."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_finetuning_accepts_a_wrapped_model():
    bare = create_toy_model(seed=0)
    head, images, labels = _expert_inputs(bare)
    reference = copy.deepcopy(bare)
    recipe = FinetuneRecipe(steps=2, batch_size=16, lr=1e-3, warmup=1)
    freeze_all_but_image_encoder(bare)  # as the caller does before wrapping in DDP
    finetune_image_encoder(_Wrapper(bare), head, images, labels, recipe)
    finetune_image_encoder(reference, head, images, labels, recipe)
    for pa, pb in zip(bare.visual.parameters(), reference.visual.parameters()):
        assert torch.equal(pa, pb)


def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run():
    base = create_toy_model(seed=0)
    head, images, labels = _expert_inputs(base, n=40)  # 40 examples, batch 16: epochs straddle steps
    recipe = FinetuneRecipe(steps=9, batch_size=16, lr=2e-3, warmup=2, seed=3, checkpoint_every=4)
    whole, interrupted, resumed = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    finetune_image_encoder(whole, head, images, labels, recipe)

    saved = []
    finetune_image_encoder(
        interrupted, head, images, labels, recipe, on_checkpoint=lambda state: saved.append(copy.deepcopy(state))
    )
    assert [state["step"] for state in saved] == [4, 8]  # none after the last step: that is the expert
    metrics = finetune_image_encoder(resumed, head, images, labels, recipe, resume=saved[0])
    assert metrics["resumed_from_step"] == 4.0
    for (name, pa), pb in zip(whole.visual.state_dict().items(), resumed.visual.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_a_checkpoint_from_a_longer_run_is_refused():
    base = create_toy_model(seed=0)
    head, images, labels = _expert_inputs(base, n=16)
    saved = []
    finetune_image_encoder(
        copy.deepcopy(base),
        head,
        images,
        labels,
        FinetuneRecipe(steps=6, batch_size=8, checkpoint_every=5),
        on_checkpoint=saved.append,
    )
    with pytest.raises(ValueError, match="step 5 does not fit a run of 3 steps"):
        finetune_image_encoder(base, head, images, labels, FinetuneRecipe(steps=3, batch_size=8), resume=saved[0])


def test_bf16_autocast_trains_and_differs_from_fp32():
    base = create_toy_model(seed=0)
    head, images, labels = _expert_inputs(base, n=32)
    recipe = FinetuneRecipe(steps=4, batch_size=16, lr=2e-3, warmup=1)
    fp32, bf16 = copy.deepcopy(base), copy.deepcopy(base)
    finetune_image_encoder(fp32, head, images, labels, recipe)
    metrics = finetune_image_encoder(bf16, head, images, labels, dataclasses.replace(recipe, precision="bf16"))
    assert metrics["final_loss"] == metrics["final_loss"]  # finite, not NaN
    assert all(p.dtype == torch.float32 for p in bf16.visual.parameters())  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(fp32.visual.parameters(), bf16.visual.parameters()))


def test_precision_policy():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cuda) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("fp16", cuda) is torch.float16
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp8", cpu)


def test_steps_for_epochs_counts_the_global_batch():
    assert steps_for_epochs(1, 1000, 100) == 10
    assert steps_for_epochs(2.5, 1000, 128) == 20  # ceil(19.53)
    assert steps_for_epochs(1, 1000, 100, world_size=4) == 3
    assert steps_for_epochs(0.001, 10, 128) == 1
