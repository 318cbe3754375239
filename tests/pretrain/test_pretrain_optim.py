"""Param groups (frozen stem, scaled learning rates) and the per-step schedule."""

from __future__ import annotations

import pytest
import torch

from tspipe.config import PretrainConfig
from tspipe.models import build_encoder
from tspipe.models.heads import TSPModel
from tspipe.pretrain.optim import build_optimizer, build_scheduler, group_lrs, lr_factor

KW = dict(warmup_epochs=2, milestones=[4, 6], gamma=0.01)


@pytest.mark.parametrize(("step", "factor"), [
    (0, 1e-5),                       # warm-up starts at 1e-5
    (5, 1e-5 * 0.75 + 0.25),         # a quarter of the way (20 warm-up steps)
    (10, 1e-5 * 0.5 + 0.5),
    (19, 1e-5 * 0.05 + 0.95),
    (20, 1.0),                       # epoch 2: warm-up over
    (39, 1.0),
    (40, 0.01),                      # epoch 4
    (59, 0.01),
    (60, 1e-4),                      # epoch 6
    (79, 1e-4),
])
def test_lr_factor_by_hand(step, factor):
    assert lr_factor(step, 10, **KW) == pytest.approx(factor, rel=1e-12)


def test_milestone_inside_warmup_multiplies_too():
    # The reference's WarmupMultiStepLR: both factors apply.
    assert lr_factor(15, 10, warmup_epochs=2, milestones=[1], gamma=0.1) == \
        pytest.approx((1e-5 * 0.25 + 0.75) * 0.1)


def test_groups_scale_with_the_global_batch_and_the_stem_is_frozen():
    model = TSPModel(build_encoder("r2plus1d_tiny", num_classes=None), 3)
    cfg = PretrainConfig(lr_backbone=1e-4, lr_heads=2e-3, warmup_epochs=1, lr_milestones=[2])
    opt = build_optimizer(model, cfg, global_batch=64)  # 2 x the reference batch
    names = [g["name"] for g in opt.param_groups]
    assert names == ["stem", "backbone", "heads"]
    stem, backbone, heads = opt.param_groups
    assert {id(p) for p in stem["params"]} == {id(p) for p in model.features.stem.parameters()}
    assert all(not p.requires_grad for p in model.features.stem.parameters())
    assert {id(p) for p in heads["params"]} == {id(p) for p in (*model.fc1.parameters(),
                                                                 *model.fc2.parameters())}
    assert len(stem["params"]) + len(backbone["params"]) + len(heads["params"]) == \
        len(list(model.parameters()))
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 0.005

    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    seen = []
    for _ in range(10):
        seen.append(group_lrs(opt))
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx({"stem": 0.0, "backbone": 2e-4 * 1e-5, "heads": 4e-3 * 1e-5})
    assert seen[2]["heads"] == pytest.approx(4e-3 * (1e-5 * 0.5 + 0.5))
    assert seen[4] == pytest.approx({"stem": 0.0, "backbone": 2e-4, "heads": 4e-3})
    assert seen[8] == pytest.approx({"stem": 0.0, "backbone": 2e-6, "heads": 4e-5})
    # The scheduler's state is plain numbers: it survives weights_only loading.
    state = sched.state_dict()
    assert state["last_epoch"] == 10


def test_a_frozen_stem_does_not_move():
    torch.manual_seed(0)
    model = TSPModel(build_encoder("r2plus1d_tiny", num_classes=None), 3, with_gvf=False)
    opt = build_optimizer(model, PretrainConfig(lr_backbone=0.1, lr_heads=0.1), 32)
    before = {k: v.clone() for k, v in model.features.stem.state_dict().items()
              if "running" not in k and "num_batches" not in k}
    out = model(torch.randn(2, 3, 4, 16, 16))
    (out.action_logits.sum() + out.region_logits.sum()).backward()
    opt.step()
    after = model.features.stem.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not torch.equal(model.features.layer1[0].conv1[0][0].weight.grad,
                           torch.zeros_like(model.features.layer1[0].conv1[0][0].weight))


def test_training_from_scratch_moves_the_stem_with_adamw():
    """freeze_stem: false trains the stem at the backbone's lr; optimizer: adamw is Adam
    with decoupled weight decay (its first step moves every weight by about lr)."""
    torch.manual_seed(0)
    model = TSPModel(build_encoder("r2plus1d_tiny", num_classes=None), 3, with_gvf=False)
    cfg = PretrainConfig(optimizer="adamw", freeze_stem=False, lr_backbone=1e-3,
                         lr_heads=2e-3, weight_decay=1e-4)
    opt = build_optimizer(model, cfg, 32)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-3, 2e-3])
    stem_conv = model.features.stem[0].weight
    before = stem_conv.detach().clone()
    out = model(torch.randn(2, 3, 4, 16, 16))
    (out.action_logits.sum() + out.region_logits.sum()).backward()
    opt.step()
    step = (stem_conv.detach() - before).abs()
    moved = step[stem_conv.grad != 0]
    assert moved.numel() > 0
    # Adam's first step is lr * sign(grad) (m / sqrt(v) = +-1), plus the tiny decay
    assert moved.median().item() == pytest.approx(1e-3, rel=0.01)


def test_head_init_reference_or_pytorch():
    """head_init: reference gives TSP's N(0, 0.01) heads with zero bias; pytorch gives
    nn.Linear's default, uniform in +-1/sqrt(fan_in) (from scratch: larger heads)."""
    from tspipe.config import ClipConfig
    from tspipe.pretrain.model import build_model

    def heads(**kw):
        cfg = PretrainConfig(init_checkpoint=None, mode="tsp", use_gvf=True, **kw)
        return build_model(cfg, ClipConfig(), 5).model.heads()

    ref, torch_default = heads(), heads(head_init="pytorch")
    for head in ref:
        assert head.weight.std().item() == pytest.approx(0.01, rel=0.25)
        assert torch.count_nonzero(head.bias) == 0
    for head in torch_default:
        bound = head.in_features ** -0.5
        assert head.weight.abs().max().item() <= bound
        assert head.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.2)
        assert 0 < head.bias.abs().max().item() <= bound
    assert [h.in_features for h in ref] == [128, 256]  # fc1 on the clip, fc2 with the GVF
