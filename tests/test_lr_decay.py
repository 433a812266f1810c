"""util.lr_decay.param_groups_lrd: lr scale per layer, weight decay only on weight matrices."""
import argparse

import pytest
import torch

import models_vit
from util.lr_decay import param_groups_lrd
from util.lr_sched import adjust_learning_rate

NO_DECAY = {"cls_token", "pos_embed"}


def tiny_vit(**kw):
    return models_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4,
                                        num_classes=5, **kw)


def by_name(groups):
    """name -> (lr_scale, weight_decay), checking that every parameter is in exactly one group."""
    table = {}
    for g in groups:
        assert len(g["names"]) == len(g["params"])
        for name in g["names"]:
            assert name not in table
            table[name] = (g["lr_scale"], g["weight_decay"])
    return table


def test_lr_scale_per_layer():
    model = tiny_vit(global_pool=True)
    table = by_name(param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=NO_DECAY, layer_decay=0.5))
    assert set(table) == {n for n, _ in model.named_parameters()}
    # 3 blocks -> 4 layers: embeddings 0.5**4, blocks.i 0.5**(3 - i), head and fc_norm 1
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
        assert table[name][0] == pytest.approx(0.5 ** 4), name
    for i in range(3):
        assert table[f"blocks.{i}.attn.qkv.weight"][0] == pytest.approx(0.5 ** (3 - i))
        assert table[f"blocks.{i}.norm2.bias"][0] == pytest.approx(0.5 ** (3 - i))
    for name in ("head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"):
        assert table[name][0] == 1.0, name


@pytest.mark.parametrize("global_pool", [False, True])
def test_no_weight_decay_on_biases_norms_cls_pos(global_pool):
    model = tiny_vit(global_pool=global_pool)
    table = by_name(param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=NO_DECAY, layer_decay=0.75))
    for name, p in model.named_parameters():
        no_decay = name.endswith(".bias") or "norm" in name or name in NO_DECAY
        assert table[name][1] == (0.0 if no_decay else 0.05), name
        assert no_decay or p.ndim == 2 or name == "patch_embed.proj.weight"


def test_frozen_parameters_are_left_out_and_scales_reach_the_optimizer():
    model = tiny_vit(global_pool=True, fixed_pos_embed=True)  # pos_embed frozen
    groups = param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=NO_DECAY, layer_decay=0.5)
    assert "pos_embed" not in by_name(groups)
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    args = argparse.Namespace(lr=2.0, min_lr=0.0, warmup_epochs=0, epochs=10)
    assert adjust_learning_rate(optimizer, 0, args) == 2.0
    for g in optimizer.param_groups:
        assert g["lr"] == pytest.approx(2.0 * g["lr_scale"])
    assert {round(g["lr_scale"], 6) for g in optimizer.param_groups} == {0.0625, 0.125, 0.25, 0.5, 1.0}


def test_no_layer_decay_gives_one_scale():
    groups = param_groups_lrd(tiny_vit(), weight_decay=0.05, layer_decay=1.0)
    assert {g["lr_scale"] for g in groups} == {1.0}


def test_without_layer_decay_there_are_two_groups():
    model = tiny_vit()
    groups = param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=NO_DECAY, layer_decay=1.0)
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.05] and all(g["lr_scale"] == 1.0 for g in groups)
    assert len(param_groups_lrd(model, 0.05, NO_DECAY, layer_decay=0.5)) == 2 * (3 + 2)  # 5 layer scales
