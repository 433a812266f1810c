import logging

import pytest
import torch

import models_vit


def test_classifier_heads_and_pooling():
    cls_model = models_vit.vit_tiny_patch16(img_size=32, depth=2, num_classes=5)
    pooled = models_vit.vit_tiny_patch16(img_size=32, depth=2, num_classes=5, global_pool=True)
    x = torch.randn(2, 3, 32, 32)
    assert cls_model(x).shape == pooled(x).shape == (2, 5)
    # MAE's global-pool model has fc_norm and no final norm (no unused parameters under DDP)
    assert "fc_norm.weight" in pooled.state_dict() and "norm.weight" not in pooled.state_dict()
    assert "norm.weight" in cls_model.state_dict() and "fc_norm.weight" not in cls_model.state_dict()
    # the pooled head really averages the patch tokens
    tokens = pooled.forward_tokens(x)
    expect = pooled.head(pooled.fc_norm(tokens[:, 1:].mean(1)))
    torch.testing.assert_close(pooled(x), expect)


def test_position_embeddings_follow_the_input_size():
    model = models_vit.vit_tiny_patch16(img_size=32, depth=1)
    assert model.pos_embed_for((2, 2)) is model.pos_embed
    assert model.pos_embed_for((3, 5)).shape == (1, 16, 192)
    assert model.forward_features(torch.randn(1, 3, 48, 80)).shape == (1, 3, 5, 192)


def test_last_selfattention_rows_are_distributions():
    model = models_vit.vit_tiny_patch16(img_size=32, depth=2).eval()
    attn = model.last_selfattention(torch.randn(2, 3, 32, 48))
    assert attn.shape == (2, 3, 1 + 6, 1 + 6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 7))


def test_architecture_names_and_inference(caplog):
    assert models_vit.to_vit_name("siammae_vit_small_patch16") == "vit_small_patch16"
    assert models_vit.to_vit_name("mae_vit_base_patch16_dec512d8b") == "vit_base_patch16"
    sd = models_vit.vit_small_patch8(depth=3, img_size=64).state_dict()
    with caplog.at_level(logging.WARNING):
        assert models_vit.infer_vit_config(sd) == dict(patch_size=8, embed_dim=384, depth=3, num_heads=6, img_size=64)
        assert len(caplog.records) == 1 and "depth 3, which is no named model" in caplog.records[0].getMessage()
        models_vit.infer_vit_config(models_vit.vit_small_patch8(img_size=64).state_dict())
        assert len(caplog.records) == 1  # a named architecture: no warning
    with pytest.raises(ValueError, match="unknown ViT"):
        models_vit.vit_config("vit_gigantic_patch3")
    with pytest.raises(ValueError, match="not a ViT encoder"):
        models_vit.infer_vit_config({"w": torch.zeros(1)}, "x.pth")
    with pytest.raises(ValueError, match=r"x\.pth: no encoder blocks"):
        models_vit.infer_vit_config({"patch_embed.proj.weight": torch.zeros(384, 3, 16, 16)}, "x.pth")
