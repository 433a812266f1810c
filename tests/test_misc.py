"""util.misc (logging set-up, the SLURM rendezvous) and util.optim (accumulation, clipping, the
command-line wrapper)."""
import argparse
import contextlib
import os
import sys

import pytest
import torch

from util import misc, optim
from util.checkpoint import CheckpointWriteError
from util.optim import NonFiniteLoss, optimizer_step, run_script


def test_setting_up_logging_again_closes_the_former_log_file(tmp_path):
    misc.setup_logging(str(tmp_path / "a"))
    first = [h for h in misc.logger.handlers if hasattr(h, "baseFilename")]
    misc.logger.info("into a")
    misc.setup_logging(str(tmp_path / "b"))
    misc.logger.info("into b")
    assert len(first) == 1 and first[0].stream is None  # closed, not leaked
    assert "into a" in open(os.path.join(tmp_path, "a", "train.log")).read()
    assert "into b" in open(os.path.join(tmp_path, "b", "train.log")).read()
    assert "into b" not in open(os.path.join(tmp_path, "a", "train.log")).read()
    misc.setup_logging()


def test_micro_batches_step_at_accumulation_ends_and_sync_only_then():
    """5 micro-batches, accumulation over 2: steps after 1, 3 and the epoch's last (4); DDP's no_sync on
    the others. A model without no_sync (not DDP-wrapped) always runs plainly."""
    class FakeDDP:
        entered = 0

        @contextlib.contextmanager
        def no_sync(self):
            self.entered += 1
            yield

    model, steps, unsynced = FakeDDP(), [], []
    for it in range(5):
        step_now, context = optim.micro_batch(model, it, 5, 2)
        before = model.entered
        with context:
            pass
        steps.append(step_now)
        if model.entered > before:
            unsynced.append(it)
    assert steps == [False, True, False, True, True] and unsynced == [0, 2]
    assert [optim.micro_batch(object(), it, 5, 2)[0] for it in range(5)] == steps


def _broadcast_in_process(rank, init_file, out):
    import torch
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(rank + 1.0)  # each process's own statistics, as after a last DDP step
    bn.num_batches_tracked.fill_(10 * (rank + 1))
    misc.broadcast_buffers(bn)
    torch.distributed.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        f.write(f"{bn.running_mean.tolist()} {int(bn.num_batches_tracked)}")


def test_broadcast_buffers_gives_every_process_the_first_ones(tmp_path):
    import torch.multiprocessing
    torch.multiprocessing.spawn(_broadcast_in_process, args=(str(tmp_path / "init"), str(tmp_path / "r")), nprocs=2)
    assert [(tmp_path / f"r.{rank}").read_text() for rank in (0, 1)] == ["[1.0, 1.0, 1.0] 10"] * 2


def test_srun_started_processes_find_their_rendezvous(tmp_path, monkeypatch):
    """`srun python main_*.py` (no torchrun, no submitit): MASTER_ADDR is the job's first node, from
    scontrol (a stand-in here), MASTER_PORT the job id's port, the same in every task; set values stay."""
    scontrol = tmp_path / "scontrol"
    scontrol.write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"; exit 0\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    env = {"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "1234"}
    misc.slurm_rendezvous(env)
    assert env["MASTER_ADDR"] == "gpu07" and env["MASTER_PORT"] == str(misc.master_port("1234"))
    assert 20000 <= misc.master_port("1234") < 30000 and misc.master_port("1234") != misc.master_port("1235")
    kept = {"SLURM_JOB_NODELIST": "gpu[07-08]", "MASTER_ADDR": "head", "MASTER_PORT": "29500"}
    misc.slurm_rendezvous(kept)
    assert kept["MASTER_ADDR"] == "head" and kept["MASTER_PORT"] == "29500"
    with pytest.raises(RuntimeError, match=r"no host in the node list 'other\[1-2\]'"):
        misc.slurm_rendezvous({"SLURM_JOB_NODELIST": "other[1-2]"})
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="pass --dist_url tcp://HOST:PORT"):
        misc.slurm_rendezvous({"SLURM_JOB_NODELIST": "gpu[07-08]"})


def test_optimizer_step_clips_the_gradient_norm_and_returns_it():
    """grad (3, 4): norm 5; clipped to 1 -> (0.6, 0.8); SGD lr 1 from (0, 0) -> (-0.6, -0.8)."""
    p = torch.nn.Parameter(torch.zeros(2))
    model = torch.nn.Module()
    model.p = p
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.tensor([3.0, 4.0])
    norm = optimizer_step(model, opt, None, clip_grad=1.0)
    assert float(norm) == pytest.approx(5.0)
    torch.testing.assert_close(p.detach(), torch.tensor([-0.6, -0.8]))
    assert p.grad is None  # zeroed for the next accumulation


def test_run_script_refuses_an_output_dir_that_is_a_file_before_running(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")

    def get_args_parser():
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--output_dir")
        return parser

    monkeypatch.setattr(sys, "argv", ["x", "--output_dir", str(tmp_path / "afile")])
    with pytest.raises(SystemExit) as e:
        run_script("t", get_args_parser, lambda args: pytest.fail("main ran"))
    assert e.value.code == f"error: --output_dir {tmp_path / 'afile'}: exists and is not a folder"
    with pytest.raises(ValueError, match=r"--dst .*afile/sub: cannot create it \(Not a directory\)"):
        misc.make_output_dir(str(tmp_path / "afile" / "sub"), "--dst")
    misc.make_output_dir(str(tmp_path / "new" / "sub"))
    assert (tmp_path / "new" / "sub").is_dir()


@pytest.mark.parametrize("error", [NonFiniteLoss("non-finite loss at epoch 0, iteration 3"),
                                   CheckpointWriteError("o/checkpoint-last.pth: cannot write the checkpoint")])
def test_run_script_turns_a_diverged_run_or_a_failed_save_into_a_one_line_error(tmp_path, monkeypatch, error):
    def get_args_parser():
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--output_dir", default=str(tmp_path / "o"))
        return parser

    def main(args):
        raise error

    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(SystemExit) as e:
        run_script("t", get_args_parser, main)
    assert e.value.code == f"error: {error}"
