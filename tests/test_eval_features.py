"""Feature extraction: input sizes, normalisation, batching, checkpoint loading errors."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from eval.features import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, load_encoder, network_size
from eval.files import InputError
import torch.nn.functional as F
import models_vit
from conftest import hand_normalised


def test_network_size_keeps_aspect_and_rounds_to_the_patch():
    assert network_size(480, 854, 16, short_side=480) == (480, 848)
    assert network_size(480, 854, 8, short_side=480) == (480, 856)
    assert network_size(854, 480, 16, short_side=480) == (848, 480)
    assert network_size(240, 320, 16, short_side=480) == (480, 640)
    assert network_size(480, 854, 16, size=(480, 880)) == (480, 880)
    with pytest.raises(InputError, match="multiples of the patch 16"):
        network_size(480, 854, 16, size=(480, 870))
    assert network_size(480, 854, 16, short_side=16) == (16, 32)
    with pytest.raises(InputError, match=r"--short_side 10: smaller than one patch \(16 px\)"):
        network_size(480, 854, 16, short_side=10)


class PixelModel(nn.Module):
    """A stand-in ViT: each 'token' is the mean normalised colour of its patch."""

    def __init__(self, patch=4):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.patch_size = (patch, patch)

    def forward_features(self, x):
        p = self.patch_embed.patch_size[0]
        return nn.functional.avg_pool2d(x, p).permute(0, 2, 3, 1)


def test_extractor_normalises_resizes_and_batches():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)
    extractor = FeatureExtractor(PixelModel(), batch_size=2)
    feats = extractor(frames, (8, 12))
    assert feats.shape == (5, 2, 3, 3) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(5, 2, 3))
    streamed = torch.stack(list(extractor.iter_features(iter(frames), (8, 12))))
    torch.testing.assert_close(streamed, feats)
    # ImageNet normalisation: a constant frame gives (v - mean) / std per channel, then unit norm
    grey = np.full((1, 8, 8, 3), 128, np.uint8)
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(extractor(grey, (8, 8))[0, 0, 0], expected / expected.norm())


def test_vit_features_at_a_non_square_size(tmp_path):
    models_vit = pytest.importorskip("models_vit")
    path = str(tmp_path / "tiny.pth")
    torch.save({"model": models_vit.vit_tiny_patch16().state_dict()}, path)
    model = load_encoder(path)
    feats = FeatureExtractor(model)(np.zeros((2, 50, 70, 3), np.uint8), (48, 80))
    assert feats.shape == (2, 3, 5, 192)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2, 3, 5))


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    pytest.importorskip("models_vit")
    with pytest.raises(InputError, match="no such checkpoint"):
        load_encoder(str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError) as e:
        load_encoder(str(junk))
    assert "junk.pth" in str(e.value) and "\n" not in str(e.value)


def test_extractor_feeds_rgb_with_per_channel_imagenet_statistics():
    """Kills F4 (channels reversed before the network), T1/T2 (mean/std in BGR order)."""
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 255  # pure red, RGB frame as eval.files.read_rgb gives it
    feats = FeatureExtractor(PixelModel())(red, (8, 8))
    expected = hand_normalised((255, 0, 0))  # [(1-.485)/.229, -.456/.224, -.406/.225]
    torch.testing.assert_close(feats[0, 0, 0], expected / expected.norm(), rtol=1e-5, atol=1e-6)


def test_vit_features_are_the_last_block_normed_patch_tokens():
    """Kills F1 (no final norm), F2 (last patch dropped instead of [CLS]), F3 (second-to-last block):
    forward_features against the ViT pipeline composed here by hand from the model's own parts."""
    torch.manual_seed(0)
    model = models_vit.VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=4).eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.5, 0.5)
        x = torch.randn(2, 3, 16, 16)
        tokens = model.patch_embed(x) + model.pos_embed[:, 1:]
        cls = (model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1)
        t = torch.cat([cls, tokens], dim=1)
        for blk in model.blocks:
            t = blk(t)
        t = F.layer_norm(t, (32,), model.norm.weight, model.norm.bias, eps=1e-6)
        expected = t[:, 1:].reshape(2, 2, 2, 32)  # [CLS] is token 0; row-major 2x2 grid
        torch.testing.assert_close(model.forward_features(x), expected)
