"""Speed of one SiamMAE pre-training step on synthetic pairs; prints one JSON line.

    python bench/train_step.py --model siammae_vit_small_patch16 --batch_size 256 --steps 30 [--compile]

With --data_path (pre-extracted frames, videos, ...) the same step is also timed on batches from
pre-training's own loader (--num_workers, --gpu_decode), and the ratio to the synthetic rate printed;
then the loader alone (batches taken and moved to the device as the step takes them, no model), so a
fed step below the synthetic rate can be put on the loader or on the overlap.

The model, optimizer and step are pre-training's own (main_pretrain_siam.build_training, the same
parameter groups and fused AdamW, engine_pretrain.train_one_epoch). FLOPs are counted with
torch.utils.flop_counter on one forward+backward; MFU is achieved FLOP/s over a bf16 matmul's FLOP/s
measured in the same process (CUDA only).
"""
import argparse
import contextlib
import itertools
import json
import os
import re
import resource
import statistics
import sys
import time

import torch
from torch.autograd import DeviceType
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main_pretrain_siam  # noqa: E402
from bench.attention import samples_ms  # noqa: E402
from datasets import build_pretrain_dataset, device_batches  # noqa: E402
from engine_pretrain import train_one_epoch  # noqa: E402
from util.args import amp_dtype, autocast, bounded  # noqa: E402
from util.misc import compile_model  # noqa: E402


def get_args_parser():
    parser = argparse.ArgumentParser("SiamMAE training-step benchmark", parents=[main_pretrain_siam.get_args_parser()])
    parser.add_argument("--steps", default=30, type=bounded(1), help="timed steps")
    parser.add_argument("--warmup_steps", default=5, type=bounded(0))
    parser.add_argument("--data_steps", default=None, type=bounded(1),
                        help="steps timed on the real loader (default: 40 per worker, at least --steps): the "
                             "batches the workers prefetch (2 each) must be a small part of the window")
    parser.add_argument("--profile", default="", help="also profile 5 steps: print where device time goes "
                        "(one JSON line) and write the top kernels to this file")
    parser.set_defaults(batch_size=256, repeated_sampling=1, print_freq=10 ** 9, warmup_epochs=0)
    return parser


def synthetic_batches(args, n, device):
    """n copies of one batch (B, 1, 2, 3, S, S) already on the device, like a perfect data loader."""
    shape = (args.batch_size, 1, 2, 3, args.input_size, args.input_size)
    frames = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    skipped = torch.zeros(args.batch_size, dtype=torch.long)
    return [(frames, skipped)] * n


def real_batches(args):
    """Batches of the pre-training loader, epoch after epoch."""
    dataset = build_pretrain_dataset(args)
    videos = args.batch_size // args.repeated_sampling
    if len(dataset) < videos:
        raise ValueError(f"{args.data_path}: {len(dataset)} videos, fewer than one batch of {videos} "
                         f"(--batch_size {args.batch_size} / --repeated_sampling {args.repeated_sampling}); "
                         "the loader would yield nothing")
    loader, sampler = main_pretrain_siam.build_loader(dataset, args, videos)
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def loader_pairs_per_s(batches, steps, args, device):
    """The loader alone: pairs/s of `steps` batches taken and moved to the device (decoded there with
    --gpu_decode), as train_one_epoch takes them (datasets.device_batches), with no model; after one
    untimed batch."""
    with contextlib.closing(device_batches(batches, device)) as prepared:
        next(prepared)
        sync(device)
        t0 = time.perf_counter()
        for _ in itertools.islice(prepared, steps):
            pass
        sync(device)
        return steps * args.batch_size / (time.perf_counter() - t0)


def _count_cpu_attention():
    """FlopCounterMode counts the CUDA attention kernels but not the CPU one: count it the same way."""
    aten = torch.ops.aten
    forward, backward = (aten._scaled_dot_product_flash_attention_for_cpu,
                         aten._scaled_dot_product_flash_attention_for_cpu_backward)
    if forward not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(forward)(
            lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v))
    if backward not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(backward)(
            lambda g, q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_backward_flop_count(g, q, k, v))


def count_flops_per_pair(model, args, device):
    """FLOPs of one training step per pair -> (executed, model). executed: what the kernels run, the
    scores the fused attention's backward recomputes included (the issue's 74-GFLOP reference counts
    them so); model: without that recomputation (PaLM's "model FLOPs": attention's backward counted
    as twice its forward, like every other operator)."""
    _count_cpu_attention()
    frames = torch.randn(args.batch_size, 2, 3, args.input_size, args.input_size, device=device)
    with FlopCounterMode(display=False) as counter:
        with autocast(args):
            loss, _, _ = model(frames, mask_ratio=args.mask_ratio, mask_ratio_f1=args.mask_ratio_f1)
        loss.backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    attention = [n for op, n in by_op.items() if "attention" in op and "backward" not in op]
    attention_backward = [n for op, n in by_op.items() if "attention" in op and "backward" in op]
    recomputed = max(sum(attention_backward) - 2 * sum(attention), 0)
    total = counter.get_total_flops()
    return total / args.batch_size, (total - recomputed) / args.batch_size


def matmul_tflops(device, dtype, n=8192):
    """Measured dense matmul rate (TFLOP/s) of this device in this dtype -> (best, sustained). On CUDA, 150
    samples of 5 products back to back (about a second) after 3 products: best is the fastest sample, the
    ceiling MFU is taken against (the issue's reference, 805 TFLOP/s on an H200, is such a burst);
    sustained the median of the second half. A GPU at its power limit lowers its clock under back-to-back
    products: on an H200 (700 W) the first 35-65 ms of them ran at 775-792 TFLOP/s, the rest at 633-672."""
    cuda = device.type == "cuda"
    n = n if cuda else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = samples_ms(lambda: a @ b, device, reps=150 if cuda else 4, warmup_s=0, inner=5 if cuda else 1)
    rate = [2 * n ** 3 / t / 1e9 for t in ms]
    return max(rate), statistics.median(rate[len(rate) // 2:])


KERNEL_KINDS = (  # (kind, pattern on a CUDA kernel's or a CPU op's name), first match wins
    ("matmul", r"^triton_tem"),  # Inductor's matmul templates (max-autotune)
    ("inductor_layernorm", r"^triton_.*layer_norm"),  # Inductor's fused kernels, by what they fuse
    ("inductor_gelu", r"^triton_.*gelu"),
    ("inductor_other", r"^triton_"),
    ("attention", r"flash|fmha|attention|sdpa"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("matmul", r"gemm|nvjet|cutlass|xmma|matmul|\bmm\b|addmm|bmm|linear"),
    ("layernorm", r"layer_norm|layernorm"),
    ("elementwise", r"elementwise|reduce|copy|cat|index|gather|scatter|softmax|gelu|add|mul"),
)


def kernel_kind(name):
    low = name.lower()
    return next((kind for kind, pattern in KERNEL_KINDS if re.search(pattern, low)), "other")


def profile_breakdown(step, n, device, path, step_ms=None):
    """Run step(n) under torch.profiler: device time per kind of kernel (ms per step), the share of
    the wall time the device was busy, and the 30 costliest kernels written to path. One step runs under
    the profiler first, not counted (its start-up once made a profiled H200 step read 204 ms of wall
    time). step_ms: the step's wall time timed without the profiler, whose own host overhead still made
    that step read 103 ms profiled against 78 unprofiled; the busy share is taken against it when given."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities):
        step(1)
        sync(device)
    with profile(activities=activities, record_shapes=True) as prof:
        t0 = time.perf_counter()  # inside: the profiler's start and its processing at exit are not the step's
        step(n)
        sync(device)
        wall = time.perf_counter() - t0
    times = kernel_times(prof.key_averages(), cuda)
    ops = costliest_ops(prof, cuda)
    by_kind = {}
    for name, us in times.items():
        by_kind[kernel_kind(name)] = by_kind.get(kernel_kind(name), 0.0) + us / 1e3 / n
    busy = sum(times.values()) / 1e3 / n / (step_ms or wall * 1e3 / n)
    top = sorted(times.items(), key=lambda kv: -kv[1])[:30]
    with open(path, "w") as f:
        f.write(f"{'ms/step':>9}  {'kind':<18} kernel\n")
        f.writelines(f"{us / 1e3 / n:9.3f}  {kernel_kind(k):<18} {k[:160]}\n" for k, us in top)
        f.write(f"\n{'ms/step':>9}  {'calls/step':>10}  operator (input shapes) that launched the kernels; Inductor's "
                "own kernels are not operators\n")
        f.writelines(f"{us / 1e3 / n:9.3f}  {calls / n:10.1f}  {f'{key} {shapes}'[:200]}\n" for key, shapes, us, calls in ops)
    return {"ms_per_step_by_kind": {k: round(v, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "wall_ms_per_step": round(wall * 1e3 / n, 3), "unprofiled_ms_per_step": step_ms and round(step_ms, 3),
            "device_busy": round(busy, 3),
            "top_kernels": path}


def kernel_times(rows, cuda):
    """{kernel name: microseconds} from the profiler's averages: CUDA kernels' device time, leaving out
    user annotations (a record_function range such as Optimizer.step#AdamW.step spans kernels already
    counted), or on the CPU the leaf operators' own time."""
    if cuda:
        return {e.key: e.self_device_time_total for e in rows
                if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)}
    return {e.key: e.self_cpu_time_total for e in rows if e.key.startswith("aten::")}


def costliest_ops(prof, cuda, top=30):
    """The operators (aten::..., by input shapes) whose kernels took the most device time (CPU time on the
    CPU): names the eager operator behind a costly kernel, e.g. a reduction outside the compiled graph.
    -> [(name, input shapes, microseconds, calls)]."""
    rows = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
    rows = [(e.key, e.input_shapes, e.self_device_time_total if cuda else e.self_cpu_time_total, e.count)
            for e in rows]
    return sorted(rows, key=lambda row: -row[2])[:top]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dynamo_graphs():
    """How many graphs torch.compile has built in this process so far (one per graph break or recompile)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def run(args):
    device = torch.device(args.device)
    main_pretrain_siam.check_args(args)
    if args.profile and not os.path.isdir(os.path.dirname(os.path.abspath(args.profile))):
        raise FileNotFoundError(f"--profile {args.profile}: no such folder to write it in")
    torch.manual_seed(args.seed)
    # the matmul ceiling first, on an idle machine: timed after the loader had started, with 14 workers
    # decoding on 16 cores, it read 627 instead of 785 TFLOP/s on an H200 (host and GPU are timed together)
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak, sustained = matmul_tflops(device, peak_dtype)
    model, optimizer, scaler, _ = main_pretrain_siam.build_training(args, device)
    flops, model_flops = count_flops_per_pair(model, args, device)
    step_model = compile_model(model, args.compile_mode) if args.compile else model

    def pairs_per_s(batches, steps=args.steps):
        """Warm up on the first warmup_steps batches, then time `steps` steps."""
        batches = iter(batches)
        iters = args.warmup_steps + steps
        train_one_epoch(step_model, itertools.islice(batches, args.warmup_steps), optimizer, device, 0,
                        scaler, args, iters_per_epoch=iters)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        train_one_epoch(step_model, itertools.islice(batches, steps), optimizer, device, 0,
                        scaler, args, start_iter=args.warmup_steps, iters_per_epoch=iters)
        sync(device)
        return steps * args.batch_size / (time.perf_counter() - t0)

    synthetic = pairs_per_s(synthetic_batches(args, args.warmup_steps + args.steps, device))
    graphs = dynamo_graphs() if args.compile else None
    profile = None
    if args.profile:
        def steps(n):
            train_one_epoch(step_model, synthetic_batches(args, n, device), optimizer, device, 0, scaler, args,
                            iters_per_epoch=n)
        profile = profile_breakdown(steps, 5, device, args.profile, step_ms=1e3 * args.batch_size / synthetic)
    data_steps = args.data_steps or max(args.steps, 40 * args.num_workers)
    real = loader = None
    if args.data_path:
        batches = real_batches(args)
        real = pairs_per_s(batches, data_steps)
        loader = loader_pairs_per_s(batches, data_steps, args, device)
    achieved = synthetic * flops / 1e12
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "model": args.model, "batch_size": args.batch_size,
        "input_size": args.input_size, "mask_ratio": args.mask_ratio, "decoder": args.decoder,
        "amp": str(amp_dtype(args)), "amp_residual": args.amp_residual, "sdpa": args.sdpa,
        "compile": args.compile and args.compile_mode, "compiled_graphs": graphs,
        "inductor_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("TORCHINDUCTOR_")} or None,
        "steps": args.steps,
        "pairs_per_s": round(synthetic, 2), "gflop_per_pair": round(flops / 1e9, 3),
        "gflop_per_pair_model": round(model_flops / 1e9, 3),
        "achieved_tflops": round(achieved, 3),
        f"matmul_{str(peak_dtype).split('.')[-1]}_tflops": round(peak, 2),
        f"matmul_{str(peak_dtype).split('.')[-1]}_tflops_sustained": round(sustained, 2),
        "mfu": round(achieved / peak, 4) if device.type == "cuda" else None,
        "mfu_model": round(synthetic * model_flops / 1e12 / peak, 4) if device.type == "cuda" else None,
        "data_path": args.data_path or None, "num_workers": args.num_workers, "gpu_decode": args.gpu_decode,
        "data_steps": data_steps if args.data_path else None,
        "data_pairs_per_s": round(real, 2) if real else None,
        "data_vs_synthetic": round(real / synthetic, 3) if real else None,
        "loader_pairs_per_s": round(loader, 2) if loader else None,
        "loader_vs_synthetic": round(loader / synthetic, 3) if loader else None,
        "profile": profile,
        "peak_mem_gib": round((torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30, 3),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    try:
        run(get_args_parser().parse_args())
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
