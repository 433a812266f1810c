"""Linear probing end to end on a tiny generated image folder, on the CPU; the frozen encoder
stays in eval mode; LARS against hand-worked steps."""
import argparse
import json
import math

import pytest
import torch

import engine_finetune
import main_linprobe
from util.checkpoint import load_checkpoint
from util.lars import LARS
from conftest import captured_run


def run(image_folder, out, *extra):
    argv = ["--data_path", image_folder, "--output_dir", str(out), "--input_size", "32", "--batch_size", "4",
            "--num_workers", "0", "--device", "cpu", "--warmup_epochs", "1", "--print_freq", "1", *extra]
    parser = argparse.ArgumentParser(parents=[main_linprobe.get_args_parser()])
    return main_linprobe.main(parser.parse_args(argv))


def test_linprobe_resume_is_exact(image_folder, siammae_checkpoint, tmp_path):
    """The BatchNorm's running statistics included (creating the evaluation loader used to draw from the
    training stream)."""
    path, _ = siammae_checkpoint
    run(image_folder, tmp_path / "a", "--finetune", path, "--epochs", "2")
    run(image_folder, tmp_path / "b", "--finetune", path, "--epochs", "1")
    run(image_folder, tmp_path / "b", "--finetune", path, "--epochs", "2")
    straight, resumed = (load_checkpoint(str(tmp_path / d / "checkpoint-last.pth"))["model"] for d in "ab")
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


@pytest.mark.parametrize("optimizer", ["lars", "sgd"])
def test_linprobe_trains_only_the_head(image_folder, siammae_checkpoint, tmp_path, optimizer):
    path, siammae = siammae_checkpoint
    stats = run(image_folder, tmp_path, "--finetune", path, "--epochs", "2", "--optimizer", optimizer)
    lines = [json.loads(line) for line in open(tmp_path / "log.txt")]
    assert [line["epoch"] for line in lines] == [0, 1]
    assert all(math.isfinite(line["train_loss"]) for line in lines) and math.isfinite(stats["loss"])
    ckpt = load_checkpoint(str(tmp_path / "checkpoint-last.pth"))
    sd = ckpt["model"]
    assert ckpt["epoch"] == 2
    assert "head.0.running_mean" in sd and "head.0.weight" not in sd  # BatchNorm without affine
    assert sd["head.1.weight"].shape == (2, 192)
    for k, v in siammae.state_dict().items():  # the encoder is frozen
        if k.startswith(("blocks.", "patch_embed.", "cls_token", "norm.")):
            assert torch.equal(sd[k], v), k
    assert not torch.equal(sd["head.0.running_mean"], torch.zeros(192))  # the BatchNorm saw features


def test_encoder_in_eval_mode_head_in_train_mode(siammae_checkpoint):
    args = argparse.Namespace(model=None, input_size=32, nb_classes=3, global_pool=False, finetune="x",
                              accum_iter=1, lr=0.1, min_lr=0., warmup_epochs=0, epochs=1, print_freq=10,
                              batch_size=4, clip_grad=None, amp="none", device="cpu")
    pretrained = engine_finetune.pretrained_encoder(siammae_checkpoint[0])
    model = main_linprobe.add_probe_head(engine_finetune.build_vit(args, None, pretrained, drop_path=0.1))
    modes = []
    for module in (model.blocks[0], model.blocks[1].drop_path, model.head[0]):
        module.register_forward_pre_hook(lambda m, _: modes.append((type(m).__name__, m.training)))
    loader = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])) for _ in range(3)]
    optimizer = LARS(model.head.parameters(), lr=0.1)
    losses = []

    def criterion(output, target):  # records each iteration's loss
        losses.append(torch.nn.functional.cross_entropy(output, target))
        return losses[-1]
    args.print_freq = 2  # log windows of 2 and 1 iterations: the epoch loss is still the per-iteration mean
    stats = engine_finetune.train_one_epoch(model, criterion, loader, optimizer, torch.device("cpu"),
                                            0, None, args, trainable=model.head)
    assert stats["loss"] == pytest.approx(sum(x.item() for x in losses) / 3, rel=1e-6)
    assert dict(modes) == {"Block": False, "DropPath": False, "BatchNorm1d": True}
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.1.weight", "head.1.bias"]


def test_lars_matches_hand_worked_steps():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # |w| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=1.0, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001)
    for _ in range(2):
        w.grad, b.grad = torch.tensor([[0.6, 0.8]]), torch.tensor([0.5])  # |g| = 1
        opt.step()
    # weights: direction = 0.001 * 5 / 1 * g = [0.003, 0.004]; momentum buffer d, then 1.9 d
    assert torch.allclose(w, torch.tensor([[3.0 - 2.9 * 0.003, 4.0 - 2.9 * 0.004]]))
    # 1-D parameters: plain momentum SGD on the gradient: 0.5, then 0.95
    assert torch.allclose(b, torch.tensor([1.0 - 1.45]))

    w = torch.nn.Parameter(torch.tensor([[2.0, 4.0]]))
    opt = LARS([w], lr=0.5, weight_decay=0.5, trust_coefficient=0.01)
    w.grad = torch.tensor([[-1.0, -2.0]])  # g + 0.5 w = 0: no trust scaling, no move
    opt.step()
    assert torch.equal(w, torch.tensor([[2.0, 4.0]]))
    w.grad = torch.tensor([[0.0, 1.0]])  # d = g + 0.5 w = [1, 3]; ratio 0.01 * sqrt(20) / sqrt(10)
    opt.step()
    d = torch.tensor([[1.0, 3.0]])
    assert torch.allclose(w, torch.tensor([[2.0, 4.0]]) - 0.5 * 0.01 * 2 ** 0.5 * d)

def test_output_dir_checkpoint_is_resumed(image_folder, siammae_checkpoint, tmp_path):
    run(image_folder, tmp_path, "--finetune", siammae_checkpoint[0], "--epochs", "1")
    run(image_folder, tmp_path, "--finetune", "not-read-when-resuming.pth", "--epochs", "2")
    assert [json.loads(line)["epoch"] for line in open(tmp_path / "log.txt")] == [0, 1]


def test_linprobe_optimizer_holds_only_the_head(image_folder, tmp_path, monkeypatch):
    """Kills L3 (every parameter handed to the optimizer): only the BatchNorm-less linear layer trains."""
    seen = captured_run(main_linprobe, image_folder, tmp_path, monkeypatch)
    model, optimizer = seen["model"], seen["optimizer"]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(model.head[1].weight), id(model.head[1].bias)}
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("head."))
