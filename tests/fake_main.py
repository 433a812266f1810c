"""A stand-in for the main_* scripts in the launcher tests: the same interface (get_args_parser()
with add_help=False, main(args)), the same resume rule (output_dir/checkpoint-last.pth, else
--resume), and a 'training' that counts steps, saves checkpoint-last.pth after each and sleeps.
Every start appends one JSON line to output_dir/starts.jsonl (what it resumed from, its env)."""
import argparse
import json
import os
import time

from util.args import add_runtime_args
from util.checkpoint import LAST, find_resume, load_checkpoint, save_atomic


def get_args_parser():
    parser = argparse.ArgumentParser("fake main", add_help=False)
    add_runtime_args(parser)
    g = parser.add_argument_group("fake")
    g.add_argument("--steps", default=5, type=int, help="steps to 'train'")
    g.add_argument("--step_s", default=0.0, type=float, help="seconds per step")
    g.add_argument("--dist_check", action="store_true", help="set up torch.distributed and all-reduce")
    g.add_argument("--requires", default="", help="a file main() needs: absent, a user error (FileNotFoundError)")
    return parser


def main(args):
    os.makedirs(args.output_dir, exist_ok=True)
    if args.requires and not os.path.exists(args.requires):
        raise FileNotFoundError(f"{args.requires}: no such file")
    path = find_resume(args.output_dir, args.resume)
    start = load_checkpoint(path)["step"] if path else 0
    rank, world, total = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), None
    if args.dist_check:
        from util.misc import all_reduce_sum, init_distributed_mode
        init_distributed_mode(args)
        rank, world = args.rank, args.world_size
        total = all_reduce_sum(rank + 1)
    record = {"pid": os.getpid(), "start": start, "resume": path, "resume_arg": args.resume, "rank": rank, "world": world,
              "sum_ranks_plus_one": total, "gpu": getattr(args, "gpu", None), "dist_url": args.dist_url,
              "env": {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                     "MASTER_PORT")}}
    with open(os.path.join(args.output_dir, "starts.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
    for step in range(start, args.steps):
        time.sleep(args.step_s)
        if rank == 0:
            save_atomic({"step": step + 1}, os.path.join(args.output_dir, LAST))
    if args.dist_check:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    return {"steps": args.steps, "start": start, "rank": rank}
