"""Pre-training end to end on tiny generated videos, on the CPU."""
import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import engine_pretrain
import main_pretrain_siam
import models_mae
from datasets.synthetic import make_frames_folder, make_image_folder, make_video_folder
from util.optim import NonFiniteLoss
from util.checkpoint import encoder_state_dict, load_checkpoint, save_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model", "siammae_vit_tiny_patch16", "--input_size", "64", "--mask_ratio", "0.75",
        "--decoder_embed_dim", "32", "--decoder_depth", "1", "--decoder_num_heads", "4",
        "--batch_size", "4", "--repeated_sampling", "2", "--frame_gap", "2", "6", "--num_workers", "0",
        "--warmup_epochs", "1", "--vis_every", "0", "--print_freq", "1", "--device", "cpu", "--blr", "1e-2"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_video_folder(str(root), num_videos=6, num_frames=16, size=(48, 64), content="texture")
    return str(root)


def parse(*argv):
    parser = argparse.ArgumentParser(parents=[main_pretrain_siam.get_args_parser()])
    return parser.parse_args(list(argv))


def run(videos, out, *extra):
    return main_pretrain_siam.main(parse(*TINY, "--data_path", videos, "--output_dir", str(out), *extra))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_end_to_end_writes_checkpoints_and_logs(videos, tmp_path):
    model = run(videos, tmp_path, "--epochs", "2", "--save_every", "1", "--vis_every", "1")
    assert {"checkpoint-last.pth", "checkpoint-0.pth", "checkpoint-1.pth", "log.txt"} <= set(os.listdir(tmp_path))
    lines = [json.loads(line) for line in open(tmp_path / "log.txt")]
    assert [line["epoch"] for line in lines] == [0, 1]
    assert all(line["train_skipped_videos"] == 0 for line in lines)
    ckpt = load_checkpoint(str(tmp_path / "checkpoint-last.pth"))
    assert ckpt["epoch"] == 2 and ckpt["iteration"] == 0 and ckpt["args"].model == "siammae_vit_tiny_patch16"
    assert_same(ckpt["model"], model.state_dict())
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"train/loss", "train/lr", "train/pairs_per_s", "train/grad_norm"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("train/loss")) == 6  # 3 iterations x 2 epochs, print_freq 1
    assert [image.step for image in events.Images("reconstruction")] == [0, 1]


@pytest.mark.parametrize("amp", ["none", "fp16"])  # fp16: the grad scaler's state is restored too
def test_resume_between_epochs_is_exact(videos, tmp_path, amp):
    straight = weights(run(videos, tmp_path / "a", "--epochs", "2", "--amp", amp))
    run(videos, tmp_path / "b", "--epochs", "1", "--amp", amp)
    ckpt = load_checkpoint(str(tmp_path / "b" / "checkpoint-last.pth"))
    assert (ckpt["scaler"] is None) == (amp == "none")
    resumed = weights(run(videos, tmp_path / "b", "--epochs", "2", "--amp", amp))  # picks up checkpoint-last.pth
    assert_same(straight, resumed)
    ends = [load_checkpoint(str(tmp_path / d / "checkpoint-last.pth"))["scaler"] for d in "ab"]
    assert ends[0] == ends[1]  # fp16: the scale and its growth tracker continue as in the straight run


@pytest.mark.parametrize("accum, stop, position", [("1", "4", (1, 1)), ("2", "2", (0, 2)), ("1", "3", (1, 0)),
                                                    ("2", "4", (1, 2))])
def test_resume_inside_an_epoch_is_exact(videos, tmp_path, accum, stop, position):
    # 6 videos / 2 per batch = 3 iterations per epoch; stop after 4 = inside epoch 1, or with
    # accumulation over 2 iterations, after the first optimizer step of epoch 0; stop after 3 = at the
    # end of epoch 0, whose save and log line come first; with accumulation over 2, epoch 0's steps take
    # 2 + 1 iterations, so 4 are reached at the first step of epoch 1
    straight = weights(run(videos, tmp_path / "a", "--epochs", "2", "--accum_iter", accum))
    run(videos, tmp_path / "b", "--epochs", "2", "--accum_iter", accum, "--stop_after_iters", stop)
    ckpt = load_checkpoint(str(tmp_path / "b" / "checkpoint-last.pth"))
    assert (ckpt["epoch"], ckpt["iteration"]) == position
    resumed = weights(run(videos, tmp_path / "b", "--epochs", "2", "--accum_iter", accum))
    assert_same(straight, resumed)
    logs = [[json.loads(line) for line in open(tmp_path / d / "log.txt")] for d in "ab"]
    assert [line["epoch"] for line in logs[1]] == [0, 1]
    for a, b in zip(*logs):  # the resumed epoch's line averages all its iterations, as the straight run's
        assert (a["train_loss"], a["train_lr"], a["train_skipped_videos"]) == \
            (b["train_loss"], b["train_lr"], b["train_skipped_videos"])


def test_resume_inside_an_epoch_with_another_batch_layout_restarts_that_epoch(videos, tmp_path, monkeypatch, caplog):
    """Iteration 1 of epoch 1 at 2 videos per batch is not iteration 1 at 1 video per batch (nor with another
    accumulation or process count): the epoch starts over instead of skipping or repeating videos."""
    run(videos, tmp_path, "--epochs", "2", "--stop_after_iters", "4")
    ckpt = load_checkpoint(str(tmp_path / "checkpoint-last.pth"))
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 1)
    assert main_pretrain_siam.batch_layout_changes(ckpt, parse(*TINY)) == []
    assert main_pretrain_siam.batch_layout_changes(ckpt, parse(*TINY, "--accum_iter", "3")) == \
        ["--accum_iter 1 (now 3)"]
    ckpt["rng"] = ckpt["rng"] * 2
    assert main_pretrain_siam.batch_layout_changes(ckpt, parse(*TINY)) == ["2 processes (now 1)"]
    starts = []
    real = main_pretrain_siam.train_one_epoch
    monkeypatch.setattr(main_pretrain_siam, "train_one_epoch",
                        lambda *a, **k: starts.append((a[4], k["start_iter"])) or real(*a, **k))
    run(videos, tmp_path, "--epochs", "2", "--batch_size", "2")
    assert starts == [(1, 0)]
    assert "--batch_size 4 (now 2)" in caplog.text and "epoch 1 restarts" in caplog.text


def test_save_every_iters_counts_optimizer_steps(videos, tmp_path, monkeypatch):
    """6 iterations per epoch, 2 per optimizer step: every 2 steps is iteration 4 (epoch ends save anyway)."""
    saved = []
    real = main_pretrain_siam.save_atomic
    monkeypatch.setattr(main_pretrain_siam, "save_atomic",
                        lambda state, path: saved.append((state["epoch"], state["iteration"])) or real(state, path))
    run(videos, tmp_path, "--epochs", "1", "--batch_size", "2", "--accum_iter", "2", "--save_every_iters", "2")
    assert saved == [(0, 4), (1, 0), (1, 0)]  # the epoch end: checkpoint-last.pth and checkpoint-0.pth


def test_skipped_videos_are_named_in_train_log(tmp_path):
    """The data set's warnings go where the run logs, not only to the terminal."""
    make_video_folder(str(tmp_path / "v"), num_videos=4, num_frames=16, size=(48, 64), content="texture")
    (tmp_path / "v" / "junk.mp4").write_bytes(b"not a video")
    run(str(tmp_path / "v"), tmp_path / "out", "--epochs", "1", "--batch_size", "2")
    log = (tmp_path / "out" / "train.log").read_text()
    assert "skipping unreadable file" in log and "junk.mp4" in log


def test_resume_from_released_mae_checkpoint(videos, tmp_path):
    mae = models_mae.mae_vit_tiny_patch16(img_size=64, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": encoder_state_dict(mae.state_dict())}, path)
    model = run(videos, tmp_path / "out", "--epochs", "1", "--resume", str(path), "--blr", "0")
    assert torch.equal(model.blocks[3].attn.qkv.weight, mae.blocks[3].attn.qkv.weight)


def test_resume_from_a_checkpoint_of_maes_own_training_initialises_the_weights(videos, tmp_path):
    """MAE's main_pretrain.py saves model, optimizer, epoch, scaler and args: its optimizer belongs to
    another model, so such a file initialises weights, as a released one does."""
    mae = models_mae.mae_vit_tiny_patch16(img_size=64, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    optimizer = torch.optim.AdamW(mae.parameters())
    path = tmp_path / "checkpoint-40.pth"
    torch.save({"model": mae.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 40, "scaler": {},
                "args": argparse.Namespace(model="mae_vit_tiny_patch16")}, path)
    model = run(videos, tmp_path / "out", "--epochs", "1", "--resume", str(path), "--blr", "0")
    assert torch.equal(model.blocks[3].attn.qkv.weight, mae.blocks[3].attn.qkv.weight)
    assert json.loads(open(tmp_path / "out" / "log.txt").readline())["epoch"] == 0


def test_resume_from_wrong_architecture_or_junk_is_a_clear_error(videos, tmp_path):
    run(videos, tmp_path / "a", "--epochs", "1")
    ours = str(tmp_path / "a" / "checkpoint-last.pth")
    with pytest.raises(ValueError, match="does not fit this model"):
        run(videos, tmp_path / "b", "--epochs", "1", "--resume", ours, "--decoder", "cross")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pth: not a readable PyTorch checkpoint"):
        run(videos, tmp_path / "c", "--epochs", "1", "--resume", str(junk))


def poison_the_data(monkeypatch):
    """Pre-training's data set, every frame multiplied by NaN: the loss of the first step is not finite."""
    build = main_pretrain_siam.build_pretrain_dataset

    def poisoned(args):
        ds = build(args)
        get = ds.__getitem__
        ds.__class__ = type("Poisoned", (ds.__class__,), {"__getitem__": lambda self, i: (get(i)[0] * float("nan"), 0)})
        return ds

    monkeypatch.setattr(main_pretrain_siam, "build_pretrain_dataset", poisoned)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(videos, tmp_path, monkeypatch):
    run(videos, tmp_path, "--epochs", "1")
    good = load_checkpoint(str(tmp_path / "checkpoint-last.pth"))
    poison_the_data(monkeypatch)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at epoch 1, iteration 0"):
        run(videos, tmp_path, "--epochs", "2")
    after = load_checkpoint(str(tmp_path / "checkpoint-last.pth"))
    assert after["epoch"] == good["epoch"] == 1
    assert_same(after["model"], good["model"])


def _check_finite_in_process(rank, init_file, cases, out):
    """Each case: the first bad iteration per process (-1: none); writes what _check_finite did in each."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results = []
    for bad_iters in cases:
        try:
            engine_pretrain._check_finite(torch.tensor(bad_iters[rank]), epoch=3)
            results.append("went on")
        except NonFiniteLoss as e:
            results.append(str(e).split(":")[0])
    torch.distributed.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)


def test_a_non_finite_loss_in_one_process_stops_every_process(tmp_path):
    """Only the second process saw a NaN: both stop (neither waits at the next collective for one that is
    gone), naming its iteration; of two, the first is named; none: both go on."""
    cases = [[-1, 5], [7, 5], [-1, -1]]
    torch.multiprocessing.spawn(_check_finite_in_process, args=(str(tmp_path / "init"), cases, str(tmp_path / "r")),
                                nprocs=2)
    expected = ["non-finite loss at epoch 3, iteration 5"] * 2 + ["went on"]
    assert [json.loads((tmp_path / f"r.{rank}").read_text()) for rank in (0, 1)] == [expected, expected]


def test_kill_during_checkpoint_write_leaves_previous_loadable(tmp_path):
    path = tmp_path / "checkpoint-last.pth"
    code = (f"import torch, sys; sys.path.insert(0, {ROOT!r}); from util.checkpoint import save_atomic\n"
            f"save_atomic({{'epoch': 0}}, {str(path)!r}); print('ready', flush=True)\n"
            f"i = 1\nwhile True:\n    save_atomic({{'epoch': i, 'w': torch.randn(4_000_000)}}, {str(path)!r}); i += 1\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(str(path))
    assert ckpt["epoch"] >= 0
    save_atomic({"epoch": 99}, str(path))  # the next save (a requeued job's) leaves no temporary file behind
    assert os.listdir(tmp_path) == ["checkpoint-last.pth"] and load_checkpoint(str(path))["epoch"] == 99


def torchrun(videos, out, *extra):
    """main_pretrain_siam.main in two processes (gloo, CPU); each saves its final weights as rank<r>.pt."""
    script = ("import sys, torch, argparse; sys.path.insert(0, {root!r}); import main_pretrain_siam as m\n"
              "args = argparse.ArgumentParser(parents=[m.get_args_parser()]).parse_args(sys.argv[1:])\n"
              "model = m.main(args)\n"
              "torch.save(model.state_dict(), f'{{args.output_dir}}/rank{{args.rank}}.pt')\n").format(root=ROOT)
    script_path = out.parent / "ddp_run.py"
    script_path.write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(script_path), *TINY, "--data_path", videos, "--output_dir", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def test_two_processes_under_torchrun_end_with_identical_weights(videos, tmp_path):
    out = tmp_path / "ddp"
    torchrun(videos, out, "--epochs", "1", "--accum_iter", "1")
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert_same(r0, r1)
    assert os.path.exists(out / "checkpoint-last.pth")


def test_two_processes_resumed_inside_an_epoch_end_like_a_straight_run(videos, tmp_path):
    """3 iterations per process (1 video per batch); stopped after the first and resumed: the same
    weights and the same epoch statistics (summed over both processes) as without the stop."""
    common = ("--epochs", "1", "--batch_size", "2")
    torchrun(videos, tmp_path / "a", *common)
    torchrun(videos, tmp_path / "b", *common, "--stop_after_iters", "1")
    assert load_checkpoint(str(tmp_path / "b" / "checkpoint-last.pth"))["iteration"] == 1
    torchrun(videos, tmp_path / "b", *common)
    assert_same(torch.load(tmp_path / "a" / "rank0.pt"), torch.load(tmp_path / "b" / "rank0.pt"))
    (a,), (b,) = ([json.loads(line) for line in open(tmp_path / d / "log.txt")] for d in "ab")
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
    assert (b["train_lr"], b["train_skipped_videos"]) == (a["train_lr"], a["train_skipped_videos"])


def test_gpu_decode_path_trains_from_extracted_frames(tmp_path):
    frames = make_frames_folder(str(tmp_path / "frames"), num_videos=4, num_frames=12, size=(72, 96))
    plain = weights(run(frames, tmp_path / "a", "--epochs", "1"))
    decoded = weights(run(frames, tmp_path / "b", "--epochs", "1", "--gpu_decode"))
    # the same pairs and crops, resampled by another kernel: close, not equal, weights after training
    diffs = [(plain[k] - decoded[k]).abs().max().item() for k in plain if plain[k].is_floating_point()]
    assert 0 < max(diffs) < 1e-2


def test_crop_pretext_trains_on_an_image_folder(tmp_path):
    images = str(tmp_path / "images")
    make_image_folder(images, num_images=6, size=(80, 100))
    model = run(images, tmp_path / "out", "--epochs", "1", "--pretext", "crop")
    lines = [json.loads(line) for line in open(tmp_path / "out" / "log.txt")]
    assert lines[0]["data_items"] == 6 and math.isfinite(lines[0]["train_loss"])
    assert model.patch_embed.grid_size == (4, 4)


def test_persistent_loader_workers_see_each_epoch(tmp_path):
    """Workers start once; every epoch's items still come from (seed, epoch, index)."""
    from datasets import build_pretrain_dataset
    frames = make_frames_folder(str(tmp_path / "frames"), num_videos=4, num_frames=12, size=(48, 64))
    args = parse(*TINY, "--data_path", frames, "--num_workers", "1", "--batch_size", "4")
    dataset = build_pretrain_dataset(args)
    loader, sampler = main_pretrain_siam.build_loader(dataset, args, 2)
    assert loader.persistent_workers
    seen = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(sampler.sampler)
        batches = list(loader)
        expected = dataset.collate([dataset[(epoch, i)] for i in order])
        assert torch.equal(torch.cat([frames for frames, _ in batches]), expected[0])
        seen.append(expected[0])
    assert not torch.equal(seen[0], seen[1])


def test_loader_workers_change_nothing_in_training(videos, tmp_path):
    """Two epochs with a persistent loader worker train exactly as with none (items are keyed by
    (epoch, index), so the worker sees epoch 1's draws)."""
    inline = weights(run(videos, tmp_path / "a", "--epochs", "2"))
    workers = weights(run(videos, tmp_path / "b", "--epochs", "2", "--num_workers", "1"))
    assert_same(inline, workers)


def test_defaults_are_the_papers_table_4a_in_effective_epochs():
    """The paper reports effective epochs (views of each video); an epoch here gives repeated_sampling
    pairs per video, so its 400 ablation epochs and 40 warm-up epochs are 200 and 20 passes."""
    args = parse()
    assert (args.epochs * args.repeated_sampling, args.warmup_epochs * args.repeated_sampling) == (400, 40)
    assert (args.repeated_sampling, args.blr, args.weight_decay, args.mask_ratio, args.mask_ratio_f1,
            tuple(args.frame_gap), args.model, args.decoder) == (
        2, 1.5e-4, 0.05, 0.95, 0.0, (4, 48), "siammae_vit_small_patch16", "cross_self")
    assert args.norm_pix_loss is True  # Table 4a's target: normalised pixels


def test_weight_decay_groups_are_maes():
    """MAE's pre-training decays every trained tensor but norms and biases, [CLS] and [MASK] included."""
    args = parse(*TINY)
    args.lr = 1e-3
    model = main_pretrain_siam.build_model(args)
    groups = main_pretrain_siam.build_optimizer(model, args).param_groups
    decayed = {n for g in groups if g["weight_decay"] == 0.05 for n in g["names"]}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n in trained if not n.endswith(".bias") and "norm" not in n}  # norm1, norm_q, decoder_norm...
    assert {"cls_token", "mask_token", "blocks.0.attn.qkv.weight", "patch_embed.proj.weight"} <= decayed
    assert decayed == expected and "pos_embed" not in trained


def test_amp_residual_needs_bf16_autocast():
    for amp in ("fp16", "none"):
        with pytest.raises(ValueError, match="--amp_residual needs bf16 autocast"):
            main_pretrain_siam.check_args(parse(*TINY, "--amp_residual", "--amp", amp))
    main_pretrain_siam.check_args(parse(*TINY, "--amp_residual", "--amp", "bf16"))
    assert main_pretrain_siam.build_model(parse(*TINY, "--amp_residual", "--amp", "bf16")).amp_residual


@pytest.mark.parametrize("options, message", [
    (["--mask_ratio", "0"], "--mask_ratio 0.0 must be in"), (["--mask_ratio_f1", "1"], "--mask_ratio_f1 1.0 in"),
    (["--mask_pattern", "grid", "--mask_ratio", "0.95"], "grid supports mask ratios 0.5 and 0.75"),
    (["--model", "mae_vit_base_patch16"], "not a SiamMAE factory"), (["--batch_size", "3"], "must be a multiple"),
    (["--input_size", "72"], "--input_size 72 must be a multiple of siammae_vit_tiny_patch16's patch size 16"),
    (["--decoder_num_heads", "5"], "--decoder_embed_dim 32 must be a multiple of --decoder_num_heads 5")])
def test_options_that_do_not_go_together_stop_before_any_data_is_read(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        run(str(tmp_path / "no_such_data"), tmp_path / "out", *options)  # the data path is never looked at


def test_a_finished_run_with_no_epoch_left_says_so(videos, tmp_path, caplog):
    run(videos, tmp_path, "--epochs", "1", "--save_every", "0")
    with caplog.at_level("WARNING"):
        run(videos, tmp_path, "--epochs", "1", "--save_every", "0")
    assert "nothing to train: the run starts at epoch 1 (resumed, or --start_epoch) and --epochs is 1" in caplog.text


def test_davis_during_training_equals_the_cli_on_the_saved_checkpoint(videos, tmp_path):
    """J&F logged at the last epoch (the encoder in training) equals eval/davis_propagate.py on the
    checkpoint written at that epoch (the encoder loaded from the file)."""
    import csv
    from eval import davis_propagate
    from eval.synthetic import write_davis_set
    davis = tmp_path / "davis"
    write_davis_set(str(davis), n_sequences=2, n_frames=5, height=48, width=64, n_objects=2, seed=3)
    out = tmp_path / "out"
    run(videos, out, "--epochs", "2", "--davis_path", str(davis), "--davis_every", "5")
    lines = [json.loads(line) for line in open(out / "log.txt")]
    assert "davis_J&F-Mean" not in lines[0]  # epoch 0: not a DAVIS epoch (every 5, and the last)
    logged = lines[1]["davis_J&F-Mean"]
    assert 0 <= logged <= 1 and (out / "davis" / "global_results-val.csv").exists()
    assert len(EventAccumulator(str(out)).Reload().Scalars("davis/J&F-Mean")) == 1
    cli_args = argparse.ArgumentParser(parents=[davis_propagate.get_args_parser()]).parse_args(
        ["--davis_path", str(davis), "--checkpoint", str(out / "checkpoint-last.pth"), "--output_dir",
         str(tmp_path / "cli"), "--device", "cpu"])
    davis_propagate.main(cli_args)
    with open(tmp_path / "cli" / "global_results-val.csv") as f:
        row = next(csv.DictReader(f))
    assert abs(float(row["J&F-Mean"]) - logged) < 1e-3
    with pytest.raises(ValueError, match="nowhere: no such DAVIS folder"):  # stops the run before training
        run(videos, tmp_path / "bad", "--epochs", "1", "--davis_path", str(tmp_path / "nowhere"))


def test_data_set_smaller_than_a_batch_trains_on_the_real_batch(tmp_path):
    """6 videos and --batch_size 64 (R=2): one batch of 12 pairs per epoch; lr and the log follow it."""
    root = str(tmp_path / "videos")
    make_video_folder(root, num_videos=6, num_frames=16, size=(48, 64), content="texture")
    args = parse(*TINY, "--data_path", root, "--output_dir", str(tmp_path / "out"), "--epochs", "1",
                 "--batch_size", "64")
    main_pretrain_siam.main(args)
    assert "each process gets only 6 videos (12 pairs)" in open(tmp_path / "out" / "train.log").read()
    assert args.batch_size == 12 and args.lr == pytest.approx(1e-2 * 12 / 256)
    lines = [json.loads(line) for line in open(tmp_path / "out" / "log.txt")]
    assert lines[0]["data_items"] == 6


def test_fit_batch_keeps_the_batch_when_the_data_fills_it():
    args = argparse.Namespace(batch_size=8, repeated_sampling=2)
    assert main_pretrain_siam.fit_batch(args, 4) == 4 and args.batch_size == 8
    assert main_pretrain_siam.fit_batch(args, 3) == 3 and args.batch_size == 6


def test_grad_norm_is_logged_at_optimizer_steps_only(videos, tmp_path):
    """6 iterations, accumulation over 2, a log line each iteration: 3 steps, 3 gradient norms."""
    run(videos, tmp_path, "--epochs", "1", "--batch_size", "2", "--accum_iter", "2")
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert len(events.Scalars("train/loss")) == 6
    assert [s.step for s in events.Scalars("train/grad_norm")] == [333, 666, 1000]


class ScalarModel(torch.nn.Module):
    """loss = w * c_it + b_it, c_it and b_it taken in turn from lists (frames ignored)."""

    def __init__(self, cs, bs=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.cs, self.bs, self.calls = cs, bs or [0.0] * len(cs), 0

    def forward(self, frames, mask_ratio, mask_ratio_f1):
        c, b = self.cs[self.calls], self.bs[self.calls]
        self.calls += 1
        return self.w * c + b, None, None


def epoch_args(**kw):
    base = dict(accum_iter=1, print_freq=100, batch_size=1, mask_ratio=0.95, mask_ratio_f1=0.0, clip_grad=None,
                amp="none", device="cpu", lr=1.0, min_lr=0.0, warmup_epochs=2, epochs=10)
    return argparse.Namespace(**{**base, **kw})


def batches(n, skipped=None):
    skipped = skipped or [[0]] * n
    return [(torch.zeros(1, 1, 2, 3, 8, 8, dtype=torch.uint8), torch.tensor(s)) for s in skipped[:n]]


def test_accumulation_divides_the_loss_steps_at_accumulation_ends_with_the_lr_of_its_first_iteration():
    """4 iterations, accumulation over 2, epoch 1 of a 2-epoch warm-up to lr 1, plain SGD.
    lr at a fractional epoch e: e / 2. Step 1 (after it 1) uses the lr set at it 0: (0/4 + 1)/2 = 0.5,
    step 2 (after it 3) the lr of it 2: (2/4 + 1)/2 = 0.75. Gradients d(w*c)/dw = c, divided by 2:
    step 1 g = (1 + 2)/2 = 1.5 -> w = -0.75; step 2 g = (3 + 4)/2 = 3.5 -> w = -0.75 - 0.75*3.5 = -3.375."""
    model = ScalarModel([1.0, 2.0, 3.0, 4.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = engine_pretrain.train_one_epoch(model, batches(4), opt, torch.device("cpu"), 1, None,
                                            epoch_args(accum_iter=2), iters_per_epoch=4)
    assert model.w.item() == pytest.approx(-3.375)
    # epoch statistics: losses w*c = 0, 0, -0.75*3, -0.75*4 -> mean -5.25/4; lrs 0.5, 0.5, 0.75, 0.75
    assert stats["loss"] == pytest.approx(-5.25 / 4)
    assert stats["lr"] == pytest.approx(0.625)


def test_epoch_totals_are_means_over_iterations_and_the_sum_of_skipped_videos():
    totals = engine_pretrain.EpochTotals(torch.device("cpu"))
    for loss, lr, skipped in [(1.0, 0.1, [0, 2]), (2.0, 0.2, [1, 0]), (6.0, 0.3, [0, 0])]:
        totals.add(torch.tensor(loss), lr, torch.tensor(skipped))
    stats = totals.stats()
    assert stats["loss"] == pytest.approx(3.0)  # (1 + 2 + 6) / 3
    assert stats["lr"] == pytest.approx(0.2)  # (0.1 + 0.2 + 0.3) / 3
    assert stats["skipped_videos"] == 3  # 2 + 1


def test_train_one_epoch_counts_skipped_videos_of_every_batch():
    model = ScalarModel([1.0, 1.0, 1.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = engine_pretrain.train_one_epoch(model, batches(3, [[0, 2], [1, 0], [0, 3]]), opt, torch.device("cpu"),
                                            1, None, epoch_args(batch_size=2), iters_per_epoch=3)
    assert stats["skipped_videos"] == 6  # 2 + 1 + 3


@pytest.mark.parametrize("bad", [[1.0, math.inf, math.nan, 2.0], [1.0, -math.inf, 1.0, 1.0]])
def test_the_first_non_finite_loss_is_named_infinite_ones_included(bad):
    """loss = w + b_it: iteration 1 is the first non-finite one (an infinity, not a NaN)."""
    model = ScalarModel([1.0] * 4, bad)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at epoch 1, iteration 1:"):
        engine_pretrain.train_one_epoch(model, batches(4), opt, torch.device("cpu"), 1, None, epoch_args(),
                                        iters_per_epoch=4)


def test_a_non_finite_loss_stops_before_a_mid_epoch_save_even_between_log_lines(videos, tmp_path, monkeypatch):
    """print_freq 100 (no log line, hence no finiteness check from logging, before the epoch's end) and
    --save_every_iters 1: the NaN of iteration 0 must stop the run before checkpoint-last.pth is written."""
    poison_the_data(monkeypatch)
    saved = []
    monkeypatch.setattr(main_pretrain_siam, "save_atomic", lambda state, path: saved.append(path))
    with pytest.raises(NonFiniteLoss, match="iteration 0"):
        run(videos, tmp_path / "out", "--epochs", "1", "--print_freq", "100", "--save_every_iters", "1")
    assert saved == []


def test_optimizer_is_adamw_with_the_papers_betas():
    """Table 4a: AdamW, beta1, beta2 = 0.9, 0.95."""
    args = parse(*TINY)
    args.lr = 1e-3
    optimizer = main_pretrain_siam.build_optimizer(main_pretrain_siam.build_model(args), args)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert all(g["betas"] == (0.9, 0.95) for g in optimizer.param_groups)


def test_grid_masking_with_a_whole_f1_and_symmetric_grid_are_accepted():
    """README's ablations: --mask_pattern grid with f1 unmasked (0) or 0.5/0.5 (symmetric grid)."""
    main_pretrain_siam.check_args(parse(*TINY, "--mask_pattern", "grid", "--mask_ratio", "0.75"))
    main_pretrain_siam.check_args(parse(*TINY, "--mask_pattern", "grid", "--mask_ratio", "0.5",
                                        "--mask_ratio_f1", "0.5"))


def test_save_every_keeps_every_nth_epoch_and_the_last(videos, tmp_path):
    """3 epochs, --save_every 2: epochs 0, 1, 2 -> the 2nd epoch (index 1) and the last (index 2)."""
    run(videos, tmp_path / "out", "--epochs", "3", "--save_every", "2")
    kept = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("checkpoint-"))
    assert kept == ["checkpoint-1.pth", "checkpoint-2.pth", "checkpoint-last.pth"]


def test_effective_batch_and_lr_are_reported(videos, tmp_path, caplog):
    """--batch_size 4, --accum_iter 2, 1 process: effective batch 8 pairs, lr = 1e-2 * 8 / 256 = 3.125e-4."""
    with caplog.at_level("INFO"):
        run(videos, tmp_path / "out", "--epochs", "1", "--stop_after_iters", "1", "--accum_iter", "2")
    assert "effective batch 8 pairs (4 per process x 2 accumulation x 1 processes); lr 3.125e-04" in caplog.text


def test_sdpa_option_selects_the_attention_kernels():
    try:
        main_pretrain_siam.build_model(parse(*TINY, "--sdpa", "efficient"))
        cuda = torch.backends.cuda
        assert cuda.mem_efficient_sdp_enabled() and not cuda.flash_sdp_enabled() and not cuda.cudnn_sdp_enabled()
    finally:
        main_pretrain_siam.build_model(parse(*TINY))  # --sdpa auto
    assert torch.backends.cuda.flash_sdp_enabled()


def test_default_decoder_is_maes_512_wide_8_blocks_16_heads():
    """The paper follows MAE's implementation where Table 4a says nothing: its decoder, 512 wide, 8 blocks,
    16 heads, MLP ratio 4."""
    args = parse()
    assert (args.decoder_embed_dim, args.decoder_depth, args.decoder_num_heads, args.decoder_mlp_ratio) == \
        (512, 8, 16, 4.0)


def test_davis_probe_reads_the_chosen_split_and_follows_bf16(tmp_path):
    from eval.synthetic import write_davis_set
    davis = tmp_path / "davis"
    names = write_davis_set(str(davis), n_sequences=2, n_frames=3, height=32, width=32, n_objects=1)
    (davis / "ImageSets" / "2017" / "train.txt").write_text(names[1] + "\n")
    common = (*TINY, "--davis_path", str(davis), "--output_dir", str(tmp_path / "o"))
    probe = main_pretrain_siam.DavisProbe(parse(*common, "--davis_split", "train", "--amp", "bf16"), torch.device("cpu"))
    assert [s.name for s in probe.sequences] == [names[1]] and probe.bf16
    assert not main_pretrain_siam.DavisProbe(parse(*common, "--amp", "none"), torch.device("cpu")).bf16


def test_logged_loss_is_the_mean_since_the_previous_log_line():
    """print_freq 2 over losses 1, 2, 3, 4: TensorBoard gets (1+2)/2 at x = 500 and (3+4)/2 at x = 1000."""
    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, name, value, step):
            self.scalars.setdefault(name, []).append((step, value))

    model = ScalarModel([0.0] * 4, [1.0, 2.0, 3.0, 4.0])
    writer = Writer()
    engine_pretrain.train_one_epoch(model, batches(4), torch.optim.SGD(model.parameters(), lr=0.0),
                                    torch.device("cpu"), 0, None, epoch_args(print_freq=2), writer, iters_per_epoch=4)
    assert writer.scalars["train/loss"] == [(500, pytest.approx(1.5)), (1000, pytest.approx(3.5))]
