import argparse
import errno
import io
import os

import pytest
import torch

import models_mae
import models_siammae
import models_vit
import util.checkpoint
from util.checkpoint import (CheckpointWriteError, _resample_patch_kernel, encoder_state_dict, is_mae_training_checkpoint,
                             is_training_checkpoint, load_checkpoint, load_exact, load_matching, model_state_dict, restore_training_state, save_atomic,
                             training_state)

MAE = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
           decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4)


def released_mae(tmp_path, encoder_only):
    """A tiny checkpoint in the released format: {'model': state_dict}, encoder-only like
    mae_pretrain_vit_*.pth or encoder+decoder like mae_visualize_vit_*.pth."""
    mae = models_mae.mae_vit_tiny_patch16(**MAE)
    sd = mae.state_dict()
    if encoder_only:
        sd = encoder_state_dict(sd)
    path = tmp_path / ("mae_pretrain.pth" if encoder_only else "mae_visualize.pth")
    torch.save({"model": sd}, path)
    return path, mae


def siammae(**kw):
    return models_siammae.siammae_vit_tiny_patch16(**{**MAE, **kw})


def test_encoder_only_mae_initialises_siammae_encoder(tmp_path):
    path, mae = released_mae(tmp_path, encoder_only=True)
    model = siammae()
    dec_before = model.decoder_blocks[0].attn.qkv.weight.clone()
    report = load_matching(model, model_state_dict(load_checkpoint(path)), str(path))
    assert torch.equal(model.blocks[1].mlp.fc1.weight, mae.blocks[1].mlp.fc1.weight)
    assert torch.equal(model.cls_token, mae.cls_token)
    assert torch.equal(model.decoder_blocks[0].attn.qkv.weight, dec_before)
    assert "decoder_embed.weight" in report.new and report.ignored == []
    assert "loaded" in report.summary()


def test_full_mae_initialises_siammae_decoder_self_attention_and_mlp(tmp_path):
    path, mae = released_mae(tmp_path, encoder_only=False)
    model = siammae(decoder="cross_self")
    cross_before = model.decoder_blocks[1].cross_attn.q.weight.clone()
    report = load_matching(model, model_state_dict(load_checkpoint(path)), str(path))
    for name in ("attn.qkv.weight", "attn.proj.bias", "norm1.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc2.weight"):
        assert torch.equal(model.decoder_blocks[1].get_parameter(name), mae.decoder_blocks[1].get_parameter(name))
    for name in ("decoder_embed.weight", "mask_token", "decoder_norm.weight", "decoder_pred.weight"):
        assert torch.equal(model.get_parameter(name), mae.get_parameter(name))
    assert torch.equal(model.decoder_blocks[1].cross_attn.q.weight, cross_before)
    assert "decoder_blocks.1.cross_attn.q.weight" in report.new
    # the cross decoder has no self-attention: those tensors are reported as ignored
    report = load_matching(siammae(decoder="cross"), model_state_dict(load_checkpoint(path)), str(path))
    assert "decoder_blocks.0.attn.qkv.weight" in report.ignored


def test_patch8_model_gets_interpolated_position_embeddings(tmp_path):
    path, _ = released_mae(tmp_path, encoder_only=False)
    model = siammae(patch_size=4)  # 8x8 grid instead of 4x4, as ViT-S/8 vs /16
    report = load_matching(model, model_state_dict(load_checkpoint(path)), str(path))
    assert {"pos_embed", "decoder_pos_embed", "patch_embed.proj.weight"} <= set(report.adapted)
    assert "decoder_pred.weight" in report.ignored
    assert model.pos_embed.shape == (1, 65, 64)


def test_patch_kernel_resampling_keeps_each_filters_response_to_a_constant_image():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 16, 16)
    for size in (8, 12, 14, 32):
        out = _resample_patch_kernel(w, size)
        assert out.shape == (6, 3, size, size)
        torch.testing.assert_close(out.sum((1, 2, 3)), w.sum((1, 2, 3)), rtol=0, atol=1e-4, msg=str(size))
        ramp = _resample_patch_kernel(torch.linspace(0, 1, 16).expand(1, 1, 16, 16), size)
        assert (ramp[0, 0, :, 1:] > ramp[0, 0, :, :-1]).all()  # the filter keeps its shape: a ramp stays one
    # a whole-number factor is plain area averaging, every old tap weighing the same: 2x2 blocks summed
    torch.testing.assert_close(_resample_patch_kernel(w, 8), w.reshape(6, 3, 8, 2, 8, 2).sum((3, 5)))


def test_conflicting_shape_is_one_line_error(tmp_path):
    path, _ = released_mae(tmp_path, encoder_only=True)
    with pytest.raises(ValueError, match=r"'cls_token' has shape \(1, 1, 64\) but the model expects \(1, 1, 96\)") as e:
        load_matching(siammae(embed_dim=96, num_heads=4), model_state_dict(load_checkpoint(path)), str(path))
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert "the file holds a ViT of width 64, patch 8, 2 blocks: check --model" in str(e.value)  # MAE = dict(...)


def test_checkpoint_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="none of its 1 tensors matches"):
        load_matching(siammae(), {"foo.weight": torch.zeros(2)}, "x.pth")


class Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_pickle_is_refused_and_not_executed(tmp_path):
    marker = str(tmp_path / "pwned_marker")
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Boom(marker)}, path)
    with pytest.raises(ValueError, match="refused") as e:
        load_checkpoint(str(path))
    assert not os.path.exists(marker)
    assert "\n" not in str(e.value)


def test_not_a_checkpoint_and_missing_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pth"))


def test_training_checkpoint_with_namespace_round_trip(tmp_path):
    model = siammae()
    opt = torch.optim.AdamW(model.parameters(), betas=(0.9, 0.95))
    model(torch.randn(1, 2, 3, 32, 32), mask_ratio=0.75)[0].backward()
    opt.step()
    ckpt = training_state(model, opt, None, 3, 0, argparse.Namespace(model="x", frame_gap=[4, 48]))
    path = str(tmp_path / "checkpoint-last.pth")
    save_atomic(ckpt, path)
    loaded = load_checkpoint(path)
    assert is_training_checkpoint(loaded) and loaded["args"].frame_gap == [4, 48]
    mae_format = {k: loaded[k] for k in ("model", "optimizer", "epoch", "scaler", "args")}  # MAE's save_model
    assert not is_training_checkpoint(mae_format) and is_mae_training_checkpoint(mae_format)
    assert not is_mae_training_checkpoint(loaded) and not is_mae_training_checkpoint({"model": loaded["model"]})
    fresh = siammae()
    load_exact(fresh, loaded["model"], path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="does not fit this model"):
        load_exact(siammae(decoder="cross"), loaded["model"], path)
    params = list(fresh.parameters())  # the same tensors in two groups: the saved state does not fit
    two_groups = torch.optim.AdamW([{"params": params[:3]}, {"params": params[3:]}])
    with pytest.raises(ValueError, match="checkpoint-last.pth: its optimizer state does not fit") as e:
        restore_training_state(loaded, fresh, two_groups, None, path)
    assert "\n" not in str(e.value)


def test_a_classifier_for_other_classes_and_a_folder_are_named_as_such(tmp_path):
    trained = models_vit.vit_tiny_patch16(num_classes=2, depth=1)
    with pytest.raises(ValueError, match=r"ckpt: its classifier has 2 classes, this run 3 \(--nb_classes"):
        load_exact(models_vit.vit_tiny_patch16(num_classes=3, depth=1), trained.state_dict(), "ckpt")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: a folder, not a checkpoint file"):
        load_checkpoint(str(tmp_path))


def test_failed_save_keeps_previous_file(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    save_atomic({"epoch": 1}, path)
    with pytest.raises(Exception):
        save_atomic({"epoch": 2, "bad": lambda: 0}, path)
    assert load_checkpoint(path) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["ckpt.pth"]


class _FullDisk(io.FileIO):
    """A file on a disk that is full after `room` bytes."""
    room = 4096

    def write(self, b):
        if self.tell() + len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(b)


def test_save_on_a_full_disk_is_one_clear_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint-last.pth")
    save_atomic({"epoch": 1}, path)
    monkeypatch.setattr(util.checkpoint, "open", lambda p, mode: _FullDisk(p, mode.replace("b", "")), raising=False)
    with pytest.raises(CheckpointWriteError) as e:
        save_atomic({"epoch": 2, "w": torch.zeros(10000)}, path)
    monkeypatch.undo()
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot write the checkpoint (") and "\n" not in msg, msg
    assert "GiB free there" in msg and msg.endswith("; the previous file is unchanged"), msg
    assert load_checkpoint(path) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["checkpoint-last.pth"]  # the partial temporary file is gone


@pytest.mark.parametrize("wrap", ["siammae", "mae", "dino", "timm"])
def test_encoder_from_checkpoint_gives_same_features(tmp_path, wrap):
    arch = {**MAE, "embed_dim": 192, "num_heads": 3}  # ViT-Ti width: heads are inferred from it
    src = siammae(**arch) if wrap == "siammae" else models_mae.mae_vit_tiny_patch16(**arch)
    sd = src.state_dict()
    if wrap == "siammae":
        obj = {"model": sd, "optimizer": {}, "epoch": 0}
    elif wrap == "mae":
        obj = {"model": encoder_state_dict(sd)}
    elif wrap == "dino":
        obj = {"teacher": {"backbone." + k: v for k, v in encoder_state_dict(sd).items()}}
    else:
        obj = {**encoder_state_dict(sd), "head.weight": torch.zeros(10, 192), "head.bias": torch.zeros(10)}
    path = str(tmp_path / "w.pth")
    torch.save(obj, path)
    enc = models_vit.encoder_from_checkpoint(path, verbose=False)
    assert enc.patch_embed.patch_size == (8, 8) and len(enc.blocks) == 2
    imgs = torch.randn(1, 3, 40, 24)
    torch.testing.assert_close(enc.forward_features(imgs), src.forward_features(imgs))
