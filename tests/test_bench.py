"""The benchmark scripts keep running on the CPU (their figures are printed, not asserted)."""
import json
import time

import pytest
import torch

from bench import attention, data_throughput, loss_curve, worker_frame


def test_attention_bench_times_every_shape_of_the_step():
    args = attention.get_args_parser().parse_args(
        ["--device", "cpu", "--batch_size", "2", "--input_size", "64", "--reps", "1", "--warmup_s", "0",
         "--backends", "math"])
    rows, summary = attention.main(args)
    assert [r["shape"] for r in rows] == ["encoder_f1", "encoder_f2", "decoder_self", "decoder_cross"]
    assert all(r["ms"] > 0 for r in rows)
    # (1 + 16 patches) tokens with ViT-S/16 at 64 px; 6 heads of 64 in the encoder, 16 of 32 in the decoder
    assert (rows[0]["lq"], rows[0]["heads"], rows[0]["head_dim"]) == (17, 6, 64)
    assert (rows[2]["heads"], rows[2]["head_dim"]) == (16, 32)
    assert abs(summary["math"] - sum(r["ms"] * r["uses_per_step"] for r in rows)) < 0.01 * summary["math"] + 1e-3


def test_attention_timing_is_per_call_over_back_to_back_calls():
    calls = []

    def call():
        calls.append(time.perf_counter())
        time.sleep(0.002)

    ms = attention.time_ms(call, torch.device("cpu"), reps=2, warmup_s=0, inner=5)
    assert len(calls) == 3 + 2 * 5  # at least 3 warm-up calls, then 2 samples of 5
    assert 2.0 <= ms < 9.0  # milliseconds per call, not per sample of 5 (10 ms or more)


def test_data_throughput_counts_only_pairs_made_after_start_up(tmp_path, capsys):
    args = data_throughput.get_args_parser().parse_args(
        ["--sets", "generated", "--sources", "frames", "--gen_videos", "2", "--gen_frames", "12",
         "--gen_size", "48x64", "--workers", "0,1", "--num_pairs", "8", "--batch_size", "2",
         "--input_size", "32", "--work_dir", str(tmp_path)])
    data_throughput.main(args)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["workers"] for r in rows] == [0, 1]
    for r in rows:  # 1 + 2 * workers batches of 2 items x 2 pairs are left out of the count
        assert r["pairs"] >= 8 and r["pairs"] % 4 == 0 and r["pairs_per_s"] > 0


def test_loss_curve_pairs_are_crops_of_one_clip_a_few_frames_apart():
    args = loss_curve.get_args_parser().parse_args(
        ["--input_size", "8", "--batch_size", "6", "--clips", "2", "--clip_frames", "12", "--device", "cpu"])
    bank = loss_curve.clip_bank(args, torch.device("cpu"))
    assert bank.shape == (2, 12, 3, 40, 40) and bank.dtype == torch.uint8
    frames, skipped = next(loss_curve.pair_batches(bank, args, torch.device("cpu")))
    assert frames.shape == (6, 1, 2, 3, 8, 8) and skipped.shape == (6,)
    for f1, f2 in frames[:, 0]:  # find each crop in the bank by exhaustive search
        windows = bank.unfold(3, 8, 1).unfold(4, 8, 1)  # (clip, t, 3, y, x, 8, 8)
        hits1 = (windows == f1[None, None, :, None, None]).all(dim=(2, 5, 6)).nonzero().tolist()
        hits2 = (windows == f2[None, None, :, None, None]).all(dim=(2, 5, 6)).nonzero().tolist()
        assert any(c1 == c2 and y1 == y2 and x1 == x2 and 2 <= t2 - t1 <= 8
                   for c1, t1, y1, x1 in hits1 for c2, t2, y2, x2 in hits2)


def test_loss_curve_runs_baseline_repeat_other_seed_and_lever():
    argv = ["--model", "siammae_vit_tiny_patch16", "--input_size", "32", "--batch_size", "4", "--decoder_depth", "1",
            "--steps", "4", "--every", "2", "--clips", "2", "--clip_frames", "12", "--amp", "bf16", "--device", "cpu",
            "--lever=--amp_residual"]
    runs, summary = loss_curve.main(loss_curve.get_args_parser().parse_args(argv), argv)
    assert list(runs) == ["baseline", "baseline_repeat", "baseline_seed", "lever"]
    assert [len(v) for v in runs.values()] == [2, 2, 2, 2]
    assert runs["baseline"] == runs["baseline_repeat"] and summary["max_rel_gap_repeat"] == 0  # CPU: deterministic
    assert 0 < summary["max_rel_gap_lever"] < 0.01
    seed_gap = max(abs(s - b) / b for s, b in zip(runs["baseline_seed"], runs["baseline"]))
    assert summary["max_rel_gap_seed"] == round(seed_gap, 5) > summary["max_rel_gap_lever"]  # another init moves more


def test_worker_frame_bench_times_each_step_and_compares_filters():
    parse = worker_frame.get_args_parser().parse_args
    row = worker_frame.main(parse(["--boxes", "60", "--rounds", "1"]))
    assert row["boxes"] == 60 and 0.2 < row["shrinking_share"] < 0.8  # 256x340 frames, scale 0.5-1, 224 px
    assert 0 < row["bilinear_vs_area_mean_abs_diff"] < 2  # mild shrinks: the filters nearly agree
    steps = ("decode_opencv", "crop_resize", "layout")
    assert all(row[f"{k}_ms"] > 0 for k in steps + ("decode_pillow", "decode_torchvision", "bilinear", "area",
                                                    "area_rule", "moveaxis_layout"))
    assert row["frame_ms"] == pytest.approx(sum(row[f"{k}_ms"] for k in steps), abs=2e-4)
    assert sum(row[f"{k}_share"] for k in steps) == pytest.approx(1, abs=2e-3)
    big = worker_frame.main(parse(["--boxes", "20", "--rounds", "1", "--frame_size", "480x640"]))
    assert big["shrinking_share"] == 1.0 and big["jpeg_kb"] > row["jpeg_kb"]


def test_data_throughput_times_the_undecoded_batches_of_gpu_decode(tmp_path, capsys):
    args = data_throughput.parse_args(
        ["--sets", "generated", "--sources", "frames", "--gen_videos", "2", "--gen_frames", "12",
         "--gen_size", "48x64", "--workers", "0,1", "--num_pairs", "8", "--batch_size", "2",
         "--input_size", "32", "--work_dir", str(tmp_path), "--gpu_decode"])
    data_throughput.main(args)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["workers"] for r in rows] == [0, 1] and not any(r["decoded"] for r in rows)
    assert all(r["pairs"] >= 8 and r["main_cpu_ms_per_batch"] > 0 for r in rows)
    assert not (tmp_path / "gen_images").exists()  # only the sources asked for are written
    with pytest.raises(SystemExit):
        data_throughput.parse_args(["--gpu_decode"])  # the default sources include videos
    assert "--gpu_decode reads pre-extracted frames only: add --sources frames" in capsys.readouterr().err


def test_data_throughput_names_an_unknown_source_in_one_line(capsys):
    with pytest.raises(SystemExit):
        data_throughput.get_args_parser().parse_args(["--sources", "videos"])
    assert "unknown videos; choose from video, frames, crop" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--workers", "a,b"], "argument --workers: expected comma-separated integers, got 'a,b'"),
    (["--workers", "0,-1"], "argument --workers: worker counts must be >= 0"),
    (["--gen_size", "64"], "argument --gen_size: expected HxW, e.g. 360x480, got '64'"),
    (["--gen_size", "0x0"], "argument --gen_size: both sides must be >= 16 px"),
    (["--repeated_sampling", "0"], "argument --repeated_sampling: must be at least 1, got 0")])
def test_data_throughput_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        data_throughput.get_args_parser().parse_args(argv)
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert data_throughput.get_args_parser().parse_args(["--workers", "0,14", "--gen_size", "256x340"]).workers == [0, 14]
