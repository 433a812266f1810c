"""Distributed setup, rank-aware logging, metric logging with throughput and ETA.

Logging goes through the standard ``logging`` module: rank 0 logs at INFO, the other ranks only
warnings (``setup_logging``); nothing patches ``builtins.print``.
"""
import datetime
import json
import logging
import os
import random
import subprocess
import sys
import time
import zlib
from collections import defaultdict, deque

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger("siammae")


# ---------------------------------------------------------------- distributed
# How long a collective waits for the slowest process: the first process alone evaluates DAVIS during
# pre-training (--davis_path) while the others wait at the next step (NCCL's default is 10 minutes).
DIST_TIMEOUT = datetime.timedelta(hours=2)


def init_distributed_mode(args):
    """Set args.distributed, rank, world_size, gpu from torchrun's or SLURM's environment and
    initialise the process group (NCCL on CUDA, gloo on CPU). A single process stays undistributed."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank, args.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        args.gpu = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", 1)) > 1:  # srun python main_*.py
        args.rank, args.world_size = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        args.gpu = int(os.environ.get("SLURM_LOCALID", args.rank % max(torch.cuda.device_count(), 1)))
        if args.dist_url == "env://":
            slurm_rendezvous(os.environ)
    else:
        args.distributed, args.rank, args.world_size, args.gpu = False, 0, 1, 0
        return
    args.distributed = True
    use_cuda = str(args.device).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(args.gpu)
        args.device = f"cuda:{args.gpu}"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method=args.dist_url,
                            world_size=args.world_size, rank=args.rank, timeout=DIST_TIMEOUT)
    dist.barrier()


def master_port(job_id):
    """A port for the rendezvous, the same in every task of a job and across its requeues (no
    salted hash()): 20000-29999, below Linux's ephemeral range."""
    return 20000 + zlib.crc32(str(job_id).encode()) % 10000


def slurm_rendezvous(env):
    """MASTER_ADDR (the job's first node, from scontrol) and MASTER_PORT (master_port of the job id) in
    env, unless set: what env:// needs when srun starts the processes itself."""
    if "MASTER_ADDR" not in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True,
                                 check=True).stdout.split()
        except (OSError, subprocess.CalledProcessError) as e:
            raise RuntimeError(f"SLURM task without MASTER_ADDR: 'scontrol show hostnames {nodes}' failed ({e}); "
                               "set MASTER_ADDR and MASTER_PORT, or pass --dist_url tcp://HOST:PORT") from None
        if not out:
            raise RuntimeError(f"SLURM task without MASTER_ADDR: no host in the node list '{nodes}'")
        env["MASTER_ADDR"] = out[0]
    env.setdefault("MASTER_PORT", str(master_port(env.get("SLURM_JOB_ID", "0"))))


def is_dist_avail_and_initialized():
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank():
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process():
    return get_rank() == 0


def _all_reduce(x, op):
    if get_world_size() == 1:
        return x
    t = torch.tensor(x, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=op)
    return t.item()


def all_reduce_sum(x):
    """Sum of a python number over all ranks."""
    return _all_reduce(x, dist.ReduceOp.SUM)


def all_reduce_min(x):
    """Minimum of a python number over all ranks."""
    return _all_reduce(x, dist.ReduceOp.MIN)


def broadcast_buffers(model):
    """Every process takes process 0's buffers (BatchNorm's running statistics: DDP sends them only as a
    forward pass starts, so after the last step each process holds its own)."""
    if get_world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def all_reduce_mean(x):
    """Mean of a python number over all ranks."""
    return x if get_world_size() == 1 else all_reduce_sum(x) / get_world_size()


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------- logging
def make_output_dir(path, option="--output_dir"):
    """Create the folder a script writes to (and its parents) before any work; a one-line ValueError
    naming the option when it cannot be: a file in the way, or a folder this user cannot write."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path}: exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot create it ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: not writable")


def setup_logging(output_dir=None):
    """Rank 0 logs INFO to stdout (and output_dir/train.log); other ranks only warnings. Covers the
    'siammae' logger and its children (the data sets' 'siammae.datasets.*': skipped videos)."""
    level = logging.INFO if is_main_process() else logging.WARNING
    logger.setLevel(level)
    for h in list(logger.handlers):  # a former run's in this process (its train.log closed)
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if output_dir and is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


class SmoothedValue:
    """A window of recent values with their global mean."""

    def __init__(self, window_size=20, fmt="{median:.4f} ({global_avg:.4f})"):
        self.deque = deque(maxlen=window_size)
        self.total, self.count, self.fmt = 0.0, 0, fmt

    def update(self, value, n=1):
        self.deque.append(value)
        self.count += n
        self.total += value * n

    @property
    def median(self):
        return sorted(self.deque)[len(self.deque) // 2] if self.deque else 0.0

    @property
    def global_avg(self):
        return self.total / max(self.count, 1)

    @property
    def value(self):
        return self.deque[-1] if self.deque else 0.0

    def __str__(self):
        return self.fmt.format(median=self.median, global_avg=self.global_avg, value=self.value)


class MetricLogger:
    """Tracks named meters and logs a progress line every print_freq iterations: iterations/s,
    samples/s, ETA and the meters."""

    def __init__(self, delimiter="  "):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for k, v in kwargs.items():
            self.meters[k].update(float(v))

    def add_meter(self, name, meter):
        self.meters[name] = meter

    def __str__(self):
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def log_every(self, iterable, print_freq, header="", total=None, samples_per_iter=None, start=0,
                  samples="pairs"):
        """Yield from iterable, logging progress. total: iterations in the epoch (default len);
        start: iterations already done before this run (a resumed epoch); samples_per_iter: for a
        '<rate> <samples>/s' figure."""
        total = len(iterable) + start if total is None else total
        t0 = time.time()
        for i, obj in enumerate(iterable, start=start):
            yield obj
            done = i + 1
            if done % print_freq == 0 or done == total:
                now = time.time()
                rate = (done - start) / max(now - t0, 1e-9)
                eta = datetime.timedelta(seconds=int((total - done) / max(rate, 1e-9)))
                speed = f"{rate:.2f} it/s"
                if samples_per_iter:
                    speed += f"  {rate * samples_per_iter:.1f} {samples}/s"
                logger.info(f"{header} [{done}/{total}]  eta: {eta}  {speed}  {self}")
        elapsed = datetime.timedelta(seconds=int(time.time() - t0))
        logger.info(f"{header} total time: {elapsed}")


class SkipSampler(torch.utils.data.Sampler):
    """Wraps a sampler (with set_epoch) and skips its first `skip` indices: resuming in the
    middle of an epoch sees exactly the samples an uninterrupted run would have seen.

    with_epoch=True yields (epoch, index) keys instead of indices, so that a dataset drawing its
    randomness per (epoch, index) sees the epoch in persistent loader workers too."""

    def __init__(self, sampler, skip=0, with_epoch=False):
        self.sampler, self.skip, self.with_epoch, self.epoch = sampler, skip, with_epoch, 0

    def set_epoch(self, epoch, skip=0):
        self.sampler.set_epoch(epoch)
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return ((self.epoch, i) for i in it) if self.with_epoch else it

    def __len__(self):
        return max(len(self.sampler) - self.skip, 0)


# ---------------------------------------------------------------- a training run
def init_run(args):
    """Distributed mode, logging (with the arguments), per-rank seeds; returns the device."""
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    init_distributed_mode(args)
    setup_logging(args.output_dir)
    logger.info("args: " + json.dumps(vars(args), default=str))
    torch.manual_seed(args.seed + get_rank())
    np.random.seed(args.seed + get_rank())
    random.seed(args.seed + get_rank())  # timm's RandAugment draws from it when loading in-process
    return torch.device(args.device)


def distribute(model, args):
    """DistributedDataParallel around model when distributed; returns (model, model_without_ddp)."""
    if not args.distributed:
        return model, model
    ids = [args.gpu] if str(args.device).startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids), model


def compile_model(model, mode="default"):
    """torch.compile(model, mode=mode), drawing eager mode's random numbers: Inductor's fallback_random
    makes the compiled graph call the same generator ops in the same order as eager code, so a seed gives
    the same masks with and without --compile, and the masking noise needs no graph break (the whole
    training forward is one graph). Sets that Inductor option for the process."""
    import torch._inductor.config as inductor_config
    inductor_config.fallback_random = True
    return torch.compile(model, mode=mode)


def log_scalars(writer, epoch, fraction, prefix="train", **values):
    """TensorBoard scalars at x = (epoch + fraction of it done) x 1000; None values are skipped."""
    if writer is None:
        return
    step = int((epoch + fraction) * 1000)
    for name, value in values.items():
        if value is not None:
            writer.add_scalar(f"{prefix}/{name}", float(value), step)
