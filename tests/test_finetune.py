"""Fine-tuning end to end on a tiny generated image folder, on the CPU; top-k accuracy by hand;
initialising from SiamMAE, MAE and plain ViT weights."""
import argparse
import json
import math
import os
import shutil

import pytest
import torch

import engine_finetune
import main_finetune
import models_mae
import models_vit
from conftest import DECODER, TINY, captured_run
from util.checkpoint import LAST, load_checkpoint, save_atomic, training_state

def run(image_folder, out, *extra):
    argv = ["--data_path", image_folder, "--output_dir", str(out), "--input_size", "32", "--batch_size", "4",
            "--num_workers", "0", "--device", "cpu", "--warmup_epochs", "1", "--print_freq", "1", *extra]
    parser = argparse.ArgumentParser(parents=[main_finetune.get_args_parser()])
    return main_finetune.main(parser.parse_args(argv))


def log_lines(out):
    return [json.loads(line) for line in open(os.path.join(out, "log.txt"))]


def test_accuracy_hand_worked():
    output = torch.tensor([[0.1, 0.9, 0.0],     # top-1: 1 (target 1: hit)
                           [0.8, 0.15, 0.05],   # top-1: 0, top-2: {0, 1} (target 1: hit at 2)
                           [0.2, 0.3, 0.5],     # ranks 2, 1, 0 (target 0: hit at 3 only)
                           [0.5, 0.4, 0.1]])    # ranks 0, 1, 2 (target 2: hit at 3 only)
    target = torch.tensor([1, 1, 0, 2])
    assert engine_finetune.accuracy(output, target, topk=(1, 2, 3, 5)) == [25.0, 50.0, 100.0, 100.0]
    assert engine_finetune.accuracy(output[:1], target[:1]) == [100.0]


def test_finetune_trains_saves_resumes_and_evaluates(image_folder, siammae_checkpoint, tmp_path):
    path, _ = siammae_checkpoint
    stats = run(image_folder, tmp_path, "--finetune", path, "--epochs", "2", "--mixup", "0.8", "--cutmix", "1.0")
    assert {"checkpoint-last.pth", "log.txt"} <= set(os.listdir(tmp_path))
    lines = log_lines(tmp_path)
    assert [line["epoch"] for line in lines] == [0, 1]
    assert all(math.isfinite(line["train_loss"]) and math.isfinite(line["test_loss"]) for line in lines)
    assert 0 <= stats["acc1"] <= stats["acc5"] == 100.0  # 2 classes: top-5 always hits
    ckpt = load_checkpoint(str(tmp_path / "checkpoint-last.pth"))
    assert ckpt["epoch"] == 2 and "fc_norm.weight" in ckpt["model"] and ckpt["model"]["head.weight"].shape == (2, 192)

    run(image_folder, tmp_path, "--finetune", path, "--epochs", "3")  # picks up checkpoint-last.pth
    assert [line["epoch"] for line in log_lines(tmp_path)] == [0, 1, 2]
    assert load_checkpoint(str(tmp_path / "checkpoint-last.pth"))["epoch"] == 3

    evaluated = run(image_folder, tmp_path / "eval", "--eval", "--resume", str(tmp_path / "checkpoint-last.pth"))
    assert set(evaluated) == {"loss", "acc1", "acc5"} and math.isfinite(evaluated["loss"])
    only_val = tmp_path / "only_val"  # --eval reads val/ alone
    shutil.copytree(os.path.join(image_folder, "val"), only_val / "val")
    assert run(str(only_val), tmp_path / "eval2", "--eval", "--resume", str(tmp_path / "checkpoint-last.pth")) == evaluated
    parser = argparse.ArgumentParser(parents=[main_finetune.get_args_parser()])  # no --input_size: the checkpoint's
    args = parser.parse_args(["--data_path", str(only_val), "--output_dir", str(tmp_path / "eval3"), "--eval",
                              "--resume", str(tmp_path / "checkpoint-last.pth"), "--batch_size", "4",
                              "--num_workers", "0", "--device", "cpu"])
    assert main_finetune.main(args) == evaluated and args.input_size == 32


@pytest.mark.parametrize("workers", ["0", "2"])
def test_resume_is_exact(image_folder, siammae_checkpoint, tmp_path, workers):
    """Stopped after epoch 0 and resumed = uninterrupted: augmentation (RandAugment, random erasing), mixup and
    the loader workers' seeds draw the same numbers."""
    path, _ = siammae_checkpoint
    common = ("--finetune", path, "--mixup", "0.8", "--cutmix", "1.0", "--num_workers", workers)
    run(image_folder, tmp_path / "a", *common, "--epochs", "2")
    run(image_folder, tmp_path / "b", *common, "--epochs", "1")
    run(image_folder, tmp_path / "b", *common, "--epochs", "2")
    straight, resumed = (load_checkpoint(str(tmp_path / d / LAST)) for d in "ab")
    for k in straight["model"]:
        assert torch.equal(straight["model"][k], resumed["model"][k]), k
    assert log_lines(tmp_path / "a") == log_lines(tmp_path / "b")


def args_for(**kw):
    return argparse.Namespace(**{"model": None, "input_size": 32, "nb_classes": 5, "global_pool": True,
                                 "finetune": "ckpt", **kw})


def test_a_checkpoint_of_maes_own_fine_tuning_continues_at_the_next_epoch(image_folder, siammae_checkpoint, tmp_path):
    """MAE's main_finetune.py saves the epoch it has just finished (and resumes at epoch + 1), with no
    iteration and no random streams: continued here as MAE would."""
    path, _ = siammae_checkpoint
    run(image_folder, tmp_path / "ours", "--finetune", path, "--epochs", "1")
    ours = load_checkpoint(str(tmp_path / "ours" / LAST))
    mae_format = {k: ours[k] for k in ("model", "optimizer", "scaler", "args")}
    mae_format["epoch"] = 0  # MAE: the epoch just trained
    (tmp_path / "mae").mkdir()
    torch.save(mae_format, tmp_path / "mae" / "checkpoint-0.pth")
    run(image_folder, tmp_path / "cont", "--epochs", "2", "--resume", str(tmp_path / "mae" / "checkpoint-0.pth"))
    assert [line["epoch"] for line in log_lines(tmp_path / "cont")] == [1]


def test_siammae_encoder_initialises_the_classifier(siammae_checkpoint):
    path, siammae = siammae_checkpoint
    pretrained = engine_finetune.pretrained_encoder(path)
    args = args_for(input_size=48)  # a 6x6 grid: position embeddings interpolated from 4x4
    model = engine_finetune.build_vit(args, None, pretrained)
    assert (model.patch_embed.patch_size[0], len(model.blocks), model.embed_dim) == (8, 2, 192)
    engine_finetune.load_pretrained(model, pretrained, path, head_std=2e-5)
    assert torch.equal(model.blocks[1].attn.qkv.weight, siammae.blocks[1].attn.qkv.weight)
    assert model.pos_embed.shape == (1, 37, 192)
    assert 0 < model.head.weight.std() < 1e-4 and not model.head.bias.any()


def test_mae_and_plain_vit_weights_initialise_the_classifier(tmp_path):
    mae = models_mae.mae_vit_tiny_patch16(**TINY, **DECODER)
    vit = models_vit.vit_tiny_patch16(**TINY, num_classes=1000)  # a timm-style state dict with a 1000-way head
    for name, ckpt, source in (("mae.pth", {"model": mae.state_dict()}, mae), ("vit.pth", vit.state_dict(), vit)):
        torch.save(ckpt, tmp_path / name)
        pretrained = engine_finetune.pretrained_encoder(str(tmp_path / name))
        model = engine_finetune.build_vit(args_for(global_pool=False), None, pretrained)
        engine_finetune.load_pretrained(model, pretrained, name, head_std=2e-5)
        assert torch.equal(model.norm.weight, source.norm.weight)
        assert torch.equal(model.blocks[0].mlp.fc2.weight, source.blocks[0].mlp.fc2.weight)
        assert model.head.weight.shape == (5, 192)


def test_missing_encoder_weights_is_a_clear_error(siammae_checkpoint):
    path, _ = siammae_checkpoint
    pretrained = engine_finetune.pretrained_encoder(path)
    model = engine_finetune.build_vit(args_for(model="vit_tiny_patch16"), None, pretrained)  # 12 blocks, not 2
    with pytest.raises(ValueError, match=r"lacks encoder weights blocks\.\*\."):
        engine_finetune.load_pretrained(model, pretrained, path, head_std=2e-5)
    # a --finetune file without any encoder weights: its name, not "give --model"
    with pytest.raises(ValueError, match="ckpt: no 'patch_embed.proj.weight', so not a ViT encoder"):
        engine_finetune.build_vit(args_for(), None, {})


def test_no_architecture_and_missing_data_are_clear_errors(image_folder, tmp_path):
    with pytest.raises(ValueError, match="give --model"):
        run(image_folder, tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run(str(tmp_path / "nowhere"), tmp_path, "--model", "vit_tiny_patch16")
    with pytest.raises(ValueError, match="--eval needs --resume"):
        run(image_folder, tmp_path / "empty", "--eval")



def test_criterion_soft_targets_and_label_smoothing_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 5), torch.tensor([0, 3, 1, 4])
    logp = logits.log_softmax(-1)
    args = argparse.Namespace(smoothing=0.1)
    smoothed = main_finetune.build_criterion(args, mixup_fn=None)(logits, labels)
    nll = -logp[torch.arange(4), labels]
    torch.testing.assert_close(smoothed, (0.9 * nll + 0.1 * -logp.mean(-1)).mean())
    soft = torch.softmax(torch.randn(4, 5), -1)  # mixup's mixed targets
    mixed = main_finetune.build_criterion(args, mixup_fn=object())(logits, soft)
    torch.testing.assert_close(mixed, (-(soft * logp).sum(-1)).mean())


def test_a_shared_output_dir_or_other_weights_are_clear_errors(image_folder, siammae_checkpoint, tmp_path):
    """output_dir/checkpoint-last.pth wins over --finetune: a pre-training one there is a one-line error; one
    of a run started from other weights is continued with a warning, not silently."""
    path, model = siammae_checkpoint
    shared = tmp_path / "shared"
    os.makedirs(shared)
    state = training_state(model, torch.optim.AdamW(model.parameters()), None, 1, 0,
                           argparse.Namespace(model="siammae_vit_tiny_patch16", input_size=32))
    save_atomic(state, str(shared / LAST))
    with pytest.raises(ValueError, match="a pre-training checkpoint, not a classifier's"):
        run(image_folder, shared, "--finetune", path, "--epochs", "1")
    run(image_folder, tmp_path / "ft", "--finetune", path, "--epochs", "1")
    other = tmp_path / "other.pth"
    shutil.copy(path, other)
    run(image_folder, tmp_path / "ft", "--finetune", str(other), "--epochs", "2")
    assert [line["epoch"] for line in log_lines(tmp_path / "ft")] == [0, 1]
    warning = f"continuing a run started from {path}; --finetune {other} is not read"
    assert open(tmp_path / "ft" / "train.log").read().count(warning) == 1
    run(image_folder, tmp_path / "ft", "--finetune", path, "--epochs", "3")  # the same weights: no warning
    assert open(tmp_path / "ft" / "train.log").read().count(warning) == 1


def test_finetune_defaults_are_maes():
    """Kills FT4, FT9, FT10: MAE's main_finetune.py defaults: layer_decay 0.75, drop_path 0.1,
    smoothing 0.1, mixup_prob 1.0, mixup_switch_prob 0.5, global pool."""
    args = argparse.ArgumentParser(parents=[main_finetune.get_args_parser()]).parse_args([])
    assert (args.layer_decay, args.drop_path, args.smoothing) == (0.75, 0.1, 0.1)
    assert (args.mixup_prob, args.mixup_switch_prob, args.global_pool) == (1.0, 0.5, True)


def test_finetune_applies_layer_decay_and_drop_path(image_folder, tmp_path, monkeypatch):
    """Kills FT5 (layer_decay not passed to the parameter groups), FT6 (drop_path not passed to the
    model), FT11 (the same rate in every block). ViT-Ti: 12 blocks, so 13 layers; MAE's rule
    lr_scale = layer_decay ** (13 - layer_id): blocks.0 (id 1) 0.5 ** 12, patch_embed (id 0) 0.5 ** 13,
    head (id 13) 1; stochastic depth linear from 0 (block 0) to drop_path (block 11)."""
    seen = captured_run(main_finetune, image_folder, tmp_path, monkeypatch, "--layer_decay", "0.5", "--drop_path", "0.3")
    model, optimizer = seen["model"], seen["optimizer"]
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert scale[id(model.blocks[0].attn.qkv.weight)] == pytest.approx(0.5 ** 12)
    assert scale[id(model.patch_embed.proj.weight)] == pytest.approx(0.5 ** 13)
    assert scale[id(model.head.weight)] == pytest.approx(1.0)
    rate = lambda blk: getattr(blk.drop_path, "drop_prob", 0.0)
    assert rate(model.blocks[-1]) == pytest.approx(0.3)
    assert rate(model.blocks[0]) == 0.0
    assert rate(model.blocks[6]) == pytest.approx(0.3 * 6 / 11)
