"""The benchmark scripts keep running on the CPU (their figures are printed, not asserted)."""
import json

from bench import attention, data_throughput


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
