"""The optimised step equals the plain computation, and the step benchmark keeps running on the CPU."""
import math

import pytest
import torch

import models_siammae
import util.blocks
from bench import train_step
from datasets.synthetic import make_frames_folder
from util.misc import compile_model


def naive_sdpa(q, k, v, dropout_p=0.0):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v


def loss_and_grads(model, frames):
    torch.manual_seed(3)
    model.zero_grad()
    loss, _, _ = model(frames, mask_ratio=0.9)
    loss.backward()
    params = getattr(model, "_orig_mod", model).named_parameters()
    return loss.detach(), {n: p.grad.clone() for n, p in params if p.grad is not None}


def test_fused_attention_loss_and_gradients_equal_plain_attention(monkeypatch):
    torch.manual_seed(0)
    model = models_siammae.siammae_vit_tiny_patch16(img_size=64, depth=2, decoder_depth=2, decoder_embed_dim=64,
                                                    decoder_num_heads=4)
    frames = torch.randn(2, 2, 3, 64, 64)
    fused_loss, fused_grads = loss_and_grads(model, frames)
    monkeypatch.setattr(util.blocks.F, "scaled_dot_product_attention", naive_sdpa)
    plain_loss, plain_grads = loss_and_grads(model, frames)
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert fused_grads.keys() == plain_grads.keys()
    for name in fused_grads:
        torch.testing.assert_close(fused_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_benchmark_runs_on_cpu_and_reports_figures(monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE_GEMM", "1")  # Inductor settings from the environment are shown
    args = train_step.get_args_parser().parse_args(
        ["--model", "siammae_vit_tiny_patch16", "--batch_size", "4", "--steps", "2", "--warmup_steps", "1",
         "--input_size", "64", "--decoder_depth", "1", "--device", "cpu"])
    out = train_step.run(args)
    assert out["device"] == "cpu" and out["pairs_per_s"] > 0 and out["mfu"] is None
    assert out["inductor_env"]["TORCHINDUCTOR_MAX_AUTOTUNE_GEMM"] == "1" and out["compiled_graphs"] is None
    # FLOPs: at least the encoder's matmuls on the whole f1 (12 blocks, 17 tokens, width 192),
    # forward + backward = 3x forward, 2 FLOPs per multiply-add
    encoder_f1 = 12 * 17 * (4 * 192 * 192 + 2 * 4 * 192 * 192) * 2 * 3
    assert out["gflop_per_pair"] * 1e9 > encoder_f1


def test_benchmark_times_the_real_loader_too(tmp_path, monkeypatch):
    frames = make_frames_folder(str(tmp_path / "frames"), num_videos=8, num_frames=8, size=(72, 96))
    events, real_batches, matmul_tflops = [], train_step.real_batches, train_step.matmul_tflops

    def loader(args):
        events.append("loader started")
        yield from real_batches(args)

    monkeypatch.setattr(train_step, "real_batches", loader)
    monkeypatch.setattr(train_step, "matmul_tflops", lambda *a: events.append("matmul timed") or matmul_tflops(*a))
    args = train_step.get_args_parser().parse_args(
        ["--model", "siammae_vit_tiny_patch16", "--batch_size", "4", "--repeated_sampling", "2", "--steps", "2",
         "--warmup_steps", "1", "--input_size", "64", "--decoder_depth", "1", "--device", "cpu",
         "--data_path", frames, "--num_workers", "0", "--frame_gap", "2", "4", "--gpu_decode"])
    out = train_step.run(args)
    assert out["gpu_decode"] and out["data_pairs_per_s"] > 0
    # the ratios are to the synthetic rate of the same process (figures rounded: relative tolerance)
    assert out["data_vs_synthetic"] == pytest.approx(out["data_pairs_per_s"] / out["pairs_per_s"], rel=0.01)
    assert out["loader_pairs_per_s"] > 0
    assert out["loader_vs_synthetic"] == pytest.approx(out["loader_pairs_per_s"] / out["pairs_per_s"], rel=0.01)
    # the matmul ceiling is timed before any loader worker competes for the host
    assert events == ["matmul timed", "loader started"]


def test_matmul_rate_is_one_products_flops_over_its_time_per_call(monkeypatch):
    """best: the fastest sample; sustained: the median of the second half of the samples."""
    timed = {}

    def samples_ms(fn, device, reps, warmup_s, inner):
        timed["product"] = fn()
        return [1.0, 2.0, 4.0, 2.0, 8.0, 4.0]  # ms per call; second half 2, 8, 4 -> median 4

    monkeypatch.setattr(train_step, "samples_ms", samples_ms)
    best, sustained = train_step.matmul_tflops(torch.device("cpu"), torch.float32)
    assert timed["product"].shape == (1024, 1024)
    assert best == pytest.approx(2 * 1024 ** 3 / 1e-3 / 1e12)  # 2 n^3 FLOP in 1 ms
    assert sustained == pytest.approx(2 * 1024 ** 3 / 4e-3 / 1e12)


def test_a_data_set_smaller_than_one_batch_is_an_error_not_a_hang(tmp_path):
    frames = make_frames_folder(str(tmp_path / "frames"), num_videos=3, num_frames=8, size=(72, 96))
    args = train_step.get_args_parser().parse_args(
        ["--batch_size", "8", "--repeated_sampling", "2", "--data_path", frames, "--num_workers", "0",
         "--input_size", "64", "--device", "cpu"])
    with pytest.raises(ValueError, match=r"3 videos, fewer than one batch of 4 \(--batch_size 8 / --repeated_sampling 2\)"):
        next(train_step.real_batches(args))
    args.batch_size = 6  # 3 videos: one batch
    frames_batch, skipped = next(train_step.real_batches(args))
    assert frames_batch.shape[:2] == (3, 2) and skipped.shape == (3,)


def test_compiled_model_loss_and_gradients_equal_eager():
    """--compile is exact: the masks come from the same generator as in eager mode."""
    torch.manual_seed(0)
    model = models_siammae.siammae_vit_tiny_patch16(img_size=32, patch_size=8, depth=1, decoder_depth=1,
                                                    decoder_embed_dim=32, decoder_num_heads=4)
    frames = torch.randn(2, 2, 3, 32, 32)
    eager_loss, eager_grads = loss_and_grads(model, frames)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = compile_model(model)
    compiled_loss, compiled_grads = loss_and_grads(compiled, frames)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for name in eager_grads:
        torch.testing.assert_close(compiled_grads[name], eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    masks = {}
    for name, m, seed in (("eager", model, 5), ("compiled", compiled, 5), ("compiled_other_seed", compiled, 6)):
        torch.manual_seed(seed)
        masks[name] = m(frames, mask_ratio=0.9)[2]  # loss_and_grads' ratio: no recompile
    assert torch.equal(masks["compiled"], masks["eager"])
    assert not torch.equal(masks["compiled_other_seed"], masks["eager"])  # the masks do depend on the seed
    assert train_step.dynamo_graphs() == 1  # what bench/train_step.py reports as compiled_graphs


def test_training_forward_compiles_to_one_graph():
    """No graph break in the training forward (the masking noise included): one graph for Inductor to fuse."""
    model = models_siammae.siammae_vit_tiny_patch16(img_size=32, patch_size=8, depth=1, decoder_depth=1,
                                                    decoder_embed_dim=32, decoder_num_heads=4)
    explained = torch._dynamo.explain(model)(torch.randn(2, 2, 3, 32, 32), mask_ratio=0.75)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_flop_count_includes_the_fused_cpu_attention(monkeypatch):
    """The fused CPU attention is counted as torch counts the CUDA kernels: as attention written as
    matmuls, plus the scores q k^T the kernel recomputes in its backward pass."""
    args = train_step.get_args_parser().parse_args(["--batch_size", "2", "--input_size", "64", "--device", "cpu"])
    model = models_siammae.siammae_vit_tiny_patch16(img_size=64, decoder_depth=2, decoder_embed_dim=64,
                                                    decoder_num_heads=4)
    fused, fused_model = train_step.count_flops_per_pair(model, args, torch.device("cpu"))
    monkeypatch.setattr(util.blocks.F, "scaled_dot_product_attention", naive_sdpa)
    plain, plain_model = train_step.count_flops_per_pair(model, args, torch.device("cpu"))
    # per pair, 2 * heads * Lq * Lk * head_dim for each call: 17 tokens (16 patches + [CLS]) in f1 and in
    # the decoder, 1 in the masked f2 (no patch kept at 95% of 16); encoder 12 x 3 heads of 64, decoder 2 x
    # (self + cross) x 4 heads of 16
    recompute = 12 * 2 * 3 * (17 * 17 + 1 * 1) * 64 + 2 * 2 * (2 * 4 * 17 * 17 * 16)
    assert fused - plain == recompute
    # "model FLOPs" leave the recomputation out: the fused count then equals attention written as matmuls
    assert fused_model == plain_model == plain


def test_profile_kernel_kinds():
    kinds = {name: train_step.kernel_kind(name) for name in (
        "triton_red_fused__to_copy_add_native_layer_norm_native_layer_norm_backward_12",
        "triton_poi_fused_gelu_gelu_backward_view_7", "triton_poi_fused_add_mul_3", "triton_tem_fused_mm_0",
        "sm90_xmma_gemm_bf16bf16_bf16f32", "cudnn_generated_fort_native_sdpa_sm90_flash_bprop",
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamW>",
        "void at::native::vectorized_layer_norm_kernel<float, float>")}
    assert list(kinds.values()) == ["inductor_layernorm", "inductor_gelu", "inductor_other", "matmul", "matmul",
                                    "attention", "optimizer", "layernorm"]


def test_profile_names_the_costliest_kernels_and_operators(tmp_path):
    """--profile's file lists the costliest kernels (here: CPU operators) and the operators behind them,
    with their input shapes and calls per step."""
    a, b = torch.randn(256, 256), torch.randn(300, 400)

    def step(n):
        for _ in range(n):
            a @ a
            b.sum(dim=0)

    path = tmp_path / "top.txt"
    calls = []
    out = train_step.profile_breakdown(lambda n: calls.append(n) or step(n), 3, torch.device("cpu"), str(path))
    assert calls == [1, 3]  # one step to start the profiler up, not counted, then the profiled steps
    assert out["ms_per_step_by_kind"]["matmul"] > 0 and 0 < out["device_busy"] <= 1.01
    text = path.read_text()
    assert "aten::mm" in text
    ops = {(line.split()[2], line.split(None, 3)[3]): float(line.split()[1]) for line in
           text.split("operator (input shapes)")[1].splitlines()[1:]}
    assert ops[("aten::sum", "[[300, 400], [], [], []]")] == 1.0  # one call per step, with its shapes
    # given the step's unprofiled time, the busy share is the kernels' time per step over it
    out = train_step.profile_breakdown(step, 3, torch.device("cpu"), str(path), step_ms=1000.0)
    assert out["unprofiled_ms_per_step"] == 1000.0
    assert out["device_busy"] == pytest.approx(sum(out["ms_per_step_by_kind"].values()) / 1000.0, abs=2e-3)
    assert ops[("aten::mm", "[[256, 256], [256, 256]]")] == 1.0


def test_kernel_times_leave_out_user_annotations():
    """A record_function range on the GPU timeline (the optimizer step) spans kernels counted on their own."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType
    rows = [SimpleNamespace(key="multi_tensor_apply_kernel", device_type=DeviceType.CUDA, is_user_annotation=False,
                            self_device_time_total=490.0, self_cpu_time_total=0.0),
            SimpleNamespace(key="Optimizer.step#AdamW.step", device_type=DeviceType.CUDA, is_user_annotation=True,
                            self_device_time_total=1016.0, self_cpu_time_total=0.0),
            SimpleNamespace(key="aten::mm", device_type=DeviceType.CPU, is_user_annotation=False,
                            self_device_time_total=0.0, self_cpu_time_total=30.0)]
    assert train_step.kernel_times(rows, cuda=True) == {"multi_tensor_apply_kernel": 490.0}
    assert train_step.kernel_times(rows, cuda=False) == {"aten::mm": 30.0}


def test_a_profile_file_in_a_missing_folder_is_refused_before_the_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(train_step.main_pretrain_siam, "build_training", lambda *a: pytest.fail("the benchmark ran"))
    args = train_step.get_args_parser().parse_args(["--batch_size", "2", "--input_size", "64", "--device", "cpu",
                                                    "--model", "siammae_vit_tiny_patch16",
                                                    "--profile", str(tmp_path / "missing" / "top.txt")])
    with pytest.raises(FileNotFoundError, match=r"--profile .*missing/top.txt: no such folder to write it in"):
        train_step.run(args)
