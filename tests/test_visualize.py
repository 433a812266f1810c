"""visualize.py: pictures written at the expected size and not blank, from a video, two frames,
a MAE checkpoint and (no arguments) the demo clips; attention maps sum to one per head."""
import argparse
import os

import cv2
import numpy as np
import pytest
import torch

import models_mae
import models_siammae
import visualize
from datasets.synthetic import textured_frames, write_video
from conftest import hand_normalised

TINY = dict(img_size=32, patch_size=8, depth=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
S = 32 + visualize.PAD  # a panel and its padding


def tiny_siammae(**kw):
    return models_siammae.siammae_vit_tiny_patch16(**{**TINY, **kw})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny SiamMAE checkpoint as pre-training writes it: weights and training arguments."""
    model = tiny_siammae(decoder="cross", encoder="joint", decoder_mlp_ratio=2)  # a CropMAE-like narrow MLP
    args = argparse.Namespace(model="siammae_vit_tiny_patch16", input_size=32, encoder="joint", decoder="cross",
                              norm_pix_loss=False, mask_pattern="grid", decoder_num_heads=4)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint-last.pth"
    torch.save({"model": model.state_dict(), "args": args, "epoch": 1}, path)
    return str(path), model


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(str(tmp_path_factory.mktemp("video") / "clip.avi"), textured_frames(30, (48, 64)))


def run(out, *argv):
    parser = argparse.ArgumentParser(parents=[visualize.get_args_parser()])
    return visualize.main(parser.parse_args(["--output_dir", str(out), "--device", "cpu", *argv]))


def read(path):
    img = cv2.imread(path)
    assert img is not None, path
    assert img.std() > 10, f"{path} looks blank"
    return img


def test_video_with_checkpoint(checkpoint, video, tmp_path):
    paths = run(tmp_path, "--checkpoint", checkpoint[0], "--video", video, "--gaps", "2", "5",
                "--starts", "2", "--mask_ratios", "0.5", "0.95", "--attention_size", "48")
    names = [p.split("/")[-1] for p in paths]
    assert names == ["reconstruction_mask50.png", "reconstruction_mask95.png",
                     "attention_0_clip_0.png", "attention_1_clip_1.png"]
    for p in paths[:2]:
        assert read(p).shape == (4 * S + visualize.PAD, 4 * S + visualize.PAD, 3)  # 2 starts x 2 gaps
    for p in paths[2:]:  # 48x64 frames, 3 heads: image, heads, mean
        assert read(p).shape == (48 + 2 * visualize.PAD, 5 * (64 + visualize.PAD) + visualize.PAD, 3)


def test_model_settings_come_from_the_checkpoint(checkpoint):
    args = argparse.Namespace(checkpoint=checkpoint[0], model=None, encoder=None, norm_pix_loss=None)
    model = visualize.build_model(args)
    assert (model.encoder_type, model.decoder_type, model.mask_pattern) == ("joint", "cross", "grid")
    assert model.norm_pix_loss is False and model.blocks[0].attn.num_heads == 3
    for k, v in checkpoint[1].state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_a_model_name_of_another_width_than_the_checkpoint_is_reported_and_ignored(checkpoint, caplog):
    args = argparse.Namespace(checkpoint=checkpoint[0], model="siammae_vit_small_patch16", encoder=None,
                              norm_pix_loss=None)
    with caplog.at_level("WARNING", logger="siammae"):
        model = visualize.build_model(args)
    assert model.blocks[0].attn.num_heads == 3  # the checkpoint's ViT-Ti, not ViT-S's 6 heads
    assert "--model siammae_vit_small_patch16 is 384 wide, " in caplog.text and "--model ignored" in caplog.text


def test_two_frames_and_a_mae_visualize_checkpoint(tmp_path):
    mae = models_mae.mae_vit_tiny_patch16(**TINY)
    torch.save({"model": mae.state_dict()}, tmp_path / "mae_visualize.pth")
    frames = list(textured_frames(9, (40, 40)))
    for name, frame in (("a.png", frames[0]), ("b.png", frames[8])):
        cv2.imwrite(str(tmp_path / name), frame)
    paths = run(tmp_path / "out", "--checkpoint", str(tmp_path / "mae_visualize.pth"), "--no-norm_pix_loss",
                "--frames", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--mask_ratios", "0.75",
                "--attention_size", "32")
    assert [os.path.basename(p) for p in paths] == ["reconstruction_mask75.png", "attention_0_a.png", "attention_1_b.png"]
    args = argparse.Namespace(checkpoint=str(tmp_path / "mae_visualize.pth"), model=None, encoder=None,
                              norm_pix_loss=False)
    model = visualize.build_model(args)  # MAE's decoder is self-attention: SiamMAE's joint decoder
    assert model.decoder_type == "joint" and model.encoder_type == "siam" and not model.norm_pix_loss
    assert torch.equal(model.decoder_blocks[0].attn.qkv.weight, mae.decoder_blocks[0].attn.qkv.weight)
    assert read(paths[0]).shape == (S + visualize.PAD, 4 * S + visualize.PAD, 3)
    assert read(paths[1]).shape == (32 + 2 * visualize.PAD, 5 * S + visualize.PAD, 3)


def test_no_arguments_uses_a_random_model_on_the_demo_clips(tmp_path):
    paths = run(tmp_path, "--input_size", "64", "--gaps", "4", "--mask_ratios", "0.95", "--attention_size", "64")
    assert len(paths) == 1 + 3  # one grid, one attention figure per demo clip
    assert read(paths[0]).shape == (3 * 66 + 2, 4 * 66 + 2, 3)
    for p in paths[1:]:
        assert read(p).shape[0] == 64 + 2 * visualize.PAD


def test_attention_maps_sum_to_one_per_head():
    model = tiny_siammae().eval()
    maps = visualize.cls_attention(model, torch.randn(2, 3, 48, 64))  # a 6x8 grid, not the 4x4 of training
    assert maps.shape == (2, 3, 6, 8)
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(2, 3))
    assert (maps >= 0).all()


def test_reconstruction_grid_undoes_the_patch_normalisation_and_keeps_the_mode():
    model = tiny_siammae(norm_pix_loss=True).train()
    frames = torch.randn(3, 2, 3, 32, 32)
    f2 = frames[:, 1]
    target = model.patchify(f2)
    normalised = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** .5
    assert torch.allclose(visualize.unnormalize_prediction(model, normalised, f2), target, atol=1e-5)
    grid = visualize.reconstruction_grid(model, frames, 0.75, labels=["a", "b", "c"])
    assert grid.dtype == np.uint8 and grid.shape == (3 * S + visualize.PAD, 4 * S + visualize.PAD, 3)
    assert model.training
    seen = []
    forward = model.forward
    model.forward = lambda *a, **kw: seen.append(kw) or forward(*a, **kw)
    visualize.reconstruction_grid(model, frames, 0.5, mask_ratio_f1=0.5)  # the symmetric ablation's masking
    assert seen == [{"mask_ratio": 0.5, "mask_ratio_f1": 0.5}]


def test_reconstruction_grid_columns(monkeypatch):
    """Kills VZ2 (prediction shown without f2's visible patches pasted) and VZ6 (f2 shown as f1).
    A stand-in forward: the prediction a constant colour, the right half of the 4x4 patch grid
    removed. Checked on the lower half of each panel (the labels sit at the top)."""
    model = models_siammae.siammae_vit_tiny_patch16(img_size=32, patch_size=8, depth=1, decoder_embed_dim=32,
                                                    decoder_depth=1, decoder_num_heads=4, norm_pix_loss=False)
    c1, c2, cp = (200, 30, 60), (20, 180, 90), (90, 60, 220)

    def image(rgb):
        return hand_normalised(rgb).view(3, 1, 1).expand(3, 32, 32)
    frames = torch.stack([image(c1), image(c2)])[None]  # (1, 2, 3, 32, 32)
    mask = torch.tensor([[0, 0, 1, 1]] * 4, dtype=torch.float32).reshape(1, 16)  # 1: removed
    pred = model.patchify(image(cp)[None])
    monkeypatch.setattr(model, "forward", lambda f, mask_ratio, mask_ratio_f1=0.0: (torch.zeros(()), pred, mask))
    grid = visualize.reconstruction_grid(model, frames, 0.5).astype(int)
    pad = visualize.PAD

    def region(col, left):
        x0 = pad + col * (32 + pad) + (0 if left else 16)
        return grid[pad + 16:pad + 32, x0:x0 + 16]

    def is_colour(block, rgb):
        return np.abs(block - np.array(rgb)).max() <= 1
    assert is_colour(region(0, True), c1) and is_colour(region(0, False), c1)  # f1
    assert is_colour(region(1, True), c2) and is_colour(region(1, False), (128, 128, 128))  # masked f2
    assert is_colour(region(2, True), c2) and is_colour(region(2, False), cp)  # prediction, visible pasted
    assert is_colour(region(3, True), c2) and is_colour(region(3, False), c2)  # f2


def test_attention_input_returns_rgb_for_the_picture():
    """Kills VZ5 (the BGR frame drawn as if RGB): a pure blue BGR frame is blue in the RGB panel."""
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's BGR
    rgb, x = visualize.attention_input(bgr, 16, 8)
    assert rgb.shape == (16, 16, 3)
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])
    torch.testing.assert_close(x[0, :, 0, 0], hand_normalised((0, 0, 255)), rtol=1e-5, atol=1e-6)
