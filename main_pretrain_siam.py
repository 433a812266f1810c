"""SiamMAE pre-training on pairs of video frames (or image crops).

    torchrun --nproc_per_node=8 main_pretrain_siam.py --data_path K400 --resume mae_pretrain_vit_base.pth ...
    python main_pretrain_siam.py                       # embedded demo clips, paper defaults

Resuming: output_dir/checkpoint-last.pth is picked up automatically (a requeued job continues its
own run); --resume takes our own checkpoint (continues exactly: weights, optimizer, scaler, epoch,
position in the epoch, random streams) or a released MAE checkpoint (initialises the weights and
starts at epoch 0).
"""
import argparse
import datetime
import json
import math
import os
import time

import torch
from torch.utils.tensorboard import SummaryWriter

import models_siammae
from models_vit import vit_config
from datasets import ImageSource, build_pretrain_dataset, to_device
from eval import davis_propagate
from eval.features import FeatureExtractor
from engine_pretrain import train_one_epoch
from util.args import add_optimization_args, add_runtime_args, amp_dtype, bounded, grad_scaler, resolve_lr
from util.checkpoint import (LAST, find_resume, is_training_checkpoint, load_checkpoint, load_matching,
                             model_state_dict, restore_training_state, save_atomic, training_state)
from util.blocks import SDPA_BACKENDS, set_attention_backend
from util.lr_decay import param_groups_lrd
from util.misc import (SkipSampler, compile_model, distribute, get_rank, get_world_size, init_run, is_main_process,
                       logger)
from util.optim import run_script


def get_args_parser():
    parser = argparse.ArgumentParser("SiamMAE pre-training", add_help=False)
    add_optimization_args(parser, batch_size=64, epochs=200, blr=1.5e-4, weight_decay=0.05, warmup_epochs=20,
                          epochs_help="passes over the videos; each gives --repeated_sampling pairs per video, so "
                                      "the paper's 'effective epochs' are epochs x repeated_sampling (default "
                                      "200 x 2 = the ablations' 400; Table 1's 2000: --epochs 1000 --warmup_epochs 20)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="siammae_vit_small_patch16", help="a factory of models_siammae")
    g.add_argument("--input_size", default=224, type=bounded(1), help="frame size")
    g.add_argument("--mask_ratio", default=0.95, type=float, help="masking ratio of f2")
    g.add_argument("--mask_ratio_f1", default=0.0, type=float, help="masking ratio of f1 (0: asymmetric)")
    g.add_argument("--mask_pattern", default="random", choices=models_siammae.MASK_PATTERNS)
    g.add_argument("--encoder", default="siam", choices=models_siammae.ENCODERS)
    g.add_argument("--decoder", default="cross_self", choices=list(models_siammae.DECODERS))
    g.add_argument("--decoder_embed_dim", default=512, type=bounded(1))
    g.add_argument("--decoder_depth", default=8, type=bounded(1))
    g.add_argument("--decoder_num_heads", default=16, type=bounded(1))
    g.add_argument("--decoder_mlp_ratio", default=4.0, type=float, help="decoder MLP width / decoder width")
    g.add_argument("--norm_pix_loss", action=argparse.BooleanOptionalAction, default=True,
                   help="predict per-patch normalised pixels (the paper's target)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--compile_mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode (reduce-overhead: CUDA graphs)")
    g.add_argument("--amp_residual", action="store_true",
                   help="keep the residual stream in the autocast dtype (bf16) instead of float32: less memory "
                        "traffic per step, not bit-equal to the default (README, Speed)")
    g.add_argument("--sdpa", default="auto", choices=SDPA_BACKENDS,
                   help="fused attention kernels to use on CUDA (auto: PyTorch's choice per call)")
    g = parser.add_argument_group("data")
    g.add_argument("--data_path", default="", help="videos, a video list, extracted frames or (crop) images; "
                   "empty: the embedded demo clips")
    g.add_argument("--pretext", default="video", choices=["video", "crop"])
    g.add_argument("--frame_gap", default=[4, 48], type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="frame gap range at 30 fps")
    g.add_argument("--repeated_sampling", default=2, type=bounded(1), help="pairs drawn from each video read")
    g.add_argument("--crop_scale", default=None, type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="--pretext crop: area range of the global view (default CropMAE's: 0.1 1 for images, "
                        "0.5 1 for video frames)")
    g.add_argument("--gpu_decode", action="store_true",
                   help="decode, crop and flip pre-extracted JPEG frames on the training device (batched); "
                        "loader workers only read files (see README, Speed, for when it pays)")
    g = parser.add_argument_group("checkpoints")
    g.add_argument("--save_every", default=20, type=bounded(0),
                   help="keep checkpoint-<epoch>.pth every N epochs (0: none, only checkpoint-last.pth)")
    g.add_argument("--save_every_iters", default=0, type=bounded(0),
                   help="also refresh checkpoint-last.pth every N optimizer steps (0: only at epoch ends)")
    g.add_argument("--stop_after_iters", default=0, type=bounded(0),
                   help="save and stop after this many iterations in this run (time slices, tests)")
    g.add_argument("--vis_every", default=10, type=bounded(0), help="reconstruction picture to TensorBoard every N epochs")
    g = parser.add_argument_group("evaluation during training")
    g.add_argument("--davis_path", default="", help="a DAVIS-2017 root: label propagation with the current encoder "
                   "(the paper's settings) every --davis_every epochs, J&F to log.txt and TensorBoard")
    g.add_argument("--davis_split", default="val", help="ImageSets/2017/<split>.txt")
    g.add_argument("--davis_every", default=20, type=bounded(1), help="epochs between DAVIS evaluations (and after the last)")
    add_runtime_args(parser)
    return parser


def check_args(args):
    """One-line errors for options that do not go together, before any data or model is built."""
    if args.batch_size % args.repeated_sampling:
        raise ValueError(f"--batch_size {args.batch_size} (pairs) must be a multiple of "
                         f"--repeated_sampling {args.repeated_sampling}")
    if not args.model.startswith("siammae_") or getattr(models_siammae, args.model, None) is None:
        raise ValueError(f"--model {args.model}: not a SiamMAE factory (e.g. siammae_vit_small_patch16)")
    patch = vit_config(args.model[len("siammae_"):])["patch_size"]
    if args.input_size % patch:
        raise ValueError(f"--input_size {args.input_size} must be a multiple of {args.model}'s patch size {patch}")
    if args.decoder_embed_dim % args.decoder_num_heads:
        raise ValueError(f"--decoder_embed_dim {args.decoder_embed_dim} must be a multiple of --decoder_num_heads "
                         f"{args.decoder_num_heads}")
    if not 0 < args.mask_ratio < 1 or not 0 <= args.mask_ratio_f1 < 1:
        raise ValueError(f"--mask_ratio {args.mask_ratio} must be in (0, 1) and --mask_ratio_f1 "
                         f"{args.mask_ratio_f1} in [0, 1): the loss is over f2's removed patches")
    if args.mask_pattern == "grid" and not {args.mask_ratio, args.mask_ratio_f1} <= {0.0, 0.5, 0.75}:
        raise ValueError(f"--mask_pattern grid supports mask ratios 0.5 and 0.75 (and 0 for f1), got "
                         f"--mask_ratio {args.mask_ratio} --mask_ratio_f1 {args.mask_ratio_f1}")
    if args.amp_residual and amp_dtype(args) is not torch.bfloat16:
        now = {torch.float16: "float16", None: "no autocast"}[amp_dtype(args)]
        raise ValueError(f"--amp_residual needs bf16 autocast (--amp bf16; --amp {args.amp} on {args.device} "
                         f"gives {now}): it casts the residual stream to the autocast dtype")


def build_model(args):
    factory = getattr(models_siammae, args.model)
    set_attention_backend(args.sdpa)
    return factory(img_size=args.input_size, encoder=args.encoder, decoder=args.decoder,
                   mask_pattern=args.mask_pattern, norm_pix_loss=args.norm_pix_loss,
                   decoder_embed_dim=args.decoder_embed_dim, decoder_depth=args.decoder_depth,
                   decoder_num_heads=args.decoder_num_heads, decoder_mlp_ratio=args.decoder_mlp_ratio,
                   amp_residual=args.amp_residual)


def build_optimizer(model, args):
    """AdamW (0.9, 0.95), weight decay on every trained parameter but norms and biases (MAE's
    pre-training groups: [CLS] and [MASK] are decayed, the sin-cos position tables are frozen); fused on
    CUDA."""
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(param_groups_lrd(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95), fused=fused)


def build_training(args, device):
    """(model on device, optimizer, grad scaler or None, effective batch), args.lr resolved: what
    pre-training trains (the benches build theirs here too)."""
    model = build_model(args).to(device)
    eff_batch = resolve_lr(args, get_world_size())
    return model, build_optimizer(model, args), grad_scaler(args), eff_batch


def fit_batch(args, num_videos):
    """Videos per batch: --batch_size / --repeated_sampling, or, when one process gets fewer videos than
    that, all of them (args.batch_size shrunk to match, with a warning: lr and pairs/s follow the real batch)."""
    wanted = args.batch_size // args.repeated_sampling
    per_process = math.ceil(num_videos / get_world_size())
    if per_process >= wanted:
        return wanted
    logger.warning(f"--batch_size {args.batch_size}: each process gets only {per_process} videos "
                   f"({per_process * args.repeated_sampling} pairs); training with batches of that size")
    args.batch_size = per_process * args.repeated_sampling
    return per_process


def build_loader(dataset, args, videos_per_batch):
    sampler = SkipSampler(torch.utils.data.DistributedSampler(
        dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=True, seed=args.seed), with_epoch=True)
    loader = torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=videos_per_batch, num_workers=args.num_workers,
        collate_fn=dataset.collate, pin_memory=args.pin_mem and str(args.device).startswith("cuda"), drop_last=True,
        persistent_workers=args.num_workers > 0,  # workers start once, not every epoch
        generator=torch.Generator().manual_seed(args.seed))  # leaves the global stream (masking) alone
    return loader, sampler


BATCH_LAYOUT = ("batch_size", "repeated_sampling", "accum_iter")  # with the process count: where an iteration is


def batch_layout_changes(ckpt, args):
    """What places an iteration among the epoch's videos and differs between the checkpoint's run and this
    one, e.g. ['--batch_size 4 (now 2)', '2 processes (now 1)']; [] when nothing does."""
    saved = vars(ckpt.get("args") or argparse.Namespace())
    changes = [f"--{k} {saved[k]} (now {getattr(args, k)})" for k in BATCH_LAYOUT
               if k in saved and saved[k] != getattr(args, k)]
    processes = len(ckpt.get("rng") or [None])
    if processes != get_world_size():
        changes.append(f"{processes} processes (now {get_world_size()})")
    return changes


def resume(args, model, optimizer, scaler):
    """Restore or initialise from find_resume(output_dir, --resume). Returns (start_epoch, start_iter,
    the statistics of that epoch's iterations before start_iter or None)."""
    path = find_resume(args.output_dir, args.resume)
    if not path:
        return args.start_epoch, 0, None
    ckpt = load_checkpoint(path)
    if is_training_checkpoint(ckpt):
        epoch, it = restore_training_state(ckpt, model, optimizer, scaler, path)
        changed = batch_layout_changes(ckpt, args) if it else []
        if changed:
            logger.warning(f"{path}: saved at iteration {it} of epoch {epoch}, with {', '.join(changed)}: its "
                           f"position in the epoch means other videos in this run, so epoch {epoch} restarts")
            return epoch, 0, None
        logger.info(f"resumed from {path}: epoch {epoch}, iteration {it}")
        return epoch, it, ckpt.get("epoch_totals")
    report = load_matching(model, model_state_dict(ckpt, path), path)
    logger.info(f"initialised from {path} (starting at epoch 0): {report.summary()}")
    return 0, 0, None


def main(args):
    check_args(args)
    device = init_run(args)
    dataset = build_pretrain_dataset(args)
    videos_per_batch = fit_batch(args, len(dataset))
    loader, sampler = build_loader(dataset, args, videos_per_batch)
    iters_per_epoch = len(loader)

    davis = DavisProbe(args, device) if args.davis_path and is_main_process() else None
    model, optimizer, scaler, eff_batch = build_training(args, device)
    start_epoch, start_iter, start_totals = resume(args, model, optimizer, scaler)
    if start_iter >= iters_per_epoch:
        start_epoch, start_iter, start_totals = start_epoch + 1, 0, None

    item = "image" if isinstance(dataset.source, ImageSource) else "video"
    logger.info(f"{len(dataset)} {item}s, {args.repeated_sampling} pairs per {item} read, "
                f"{iters_per_epoch} iterations per epoch; effective batch {eff_batch} pairs "
                f"({args.batch_size} per process x {args.accum_iter} accumulation x {get_world_size()} processes); "
                f"lr {args.lr:.3e} (blr {args.blr:.3e})")
    model, model_without_ddp = distribute(model, args)
    if args.compile:
        model = compile_model(model, args.compile_mode)
    log_writer = SummaryWriter(args.log_dir or args.output_dir) if is_main_process() else None

    def save(epoch, iteration, names=(LAST,), epoch_totals=None):
        state = training_state(model_without_ddp, optimizer, scaler, epoch, iteration, args)  # collective
        state["epoch_totals"] = epoch_totals  # inside an epoch: its statistics so far
        if is_main_process():
            for name in names:
                save_atomic(state, os.path.join(args.output_dir, name))

    run_iters = [0]

    def stop_asked():
        return bool(args.stop_after_iters) and run_iters[0] >= args.stop_after_iters

    def on_step_end(epoch, iteration, ensure_finite, totals):
        """Inside the epoch: save every --save_every_iters, or save and stop (--stop_after_iters). At its
        end the epoch's own save and log line come first."""
        run_iters[0] += (iteration - 1) % args.accum_iter + 1  # this step's micro-batches (fewer at an epoch end)
        if iteration >= iters_per_epoch:
            return False
        stop = stop_asked()
        if stop or (args.save_every_iters and (iteration // args.accum_iter) % args.save_every_iters == 0):
            ensure_finite()
            save(epoch, iteration, epoch_totals=totals())
        return stop

    if start_epoch >= args.epochs:
        logger.warning(f"nothing to train: the run starts at epoch {start_epoch} (resumed, or --start_epoch) and "
                       f"--epochs is {args.epochs}; raise --epochs to continue it, or use another --output_dir")
    logger.info(f"start training for {args.epochs} epochs ({args.epochs * args.repeated_sampling} effective epochs, "
                f"the paper's unit: {args.repeated_sampling} pairs per video and epoch) from epoch {start_epoch}, "
                f"iteration {start_iter}")
    t0 = time.time()
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch, skip=start_iter * videos_per_batch)  # items are keyed by (epoch, index)
        stats = train_one_epoch(model, loader, optimizer, device, epoch, scaler, args, log_writer,
                                start_iter=start_iter, iters_per_epoch=iters_per_epoch, start_totals=start_totals,
                                on_step_end=lambda it, check, totals, e=epoch: on_step_end(e, it, check, totals))
        if stats is None:
            break
        start_iter, start_totals = 0, None
        keep = args.save_every and ((epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs)
        save(epoch + 1, 0, (LAST, f"checkpoint-{epoch}.pth") if keep else (LAST,))
        if is_main_process():
            scores = davis(model_without_ddp, epoch) if davis else {}
            write_epoch_log(args, epoch, stats, log_writer, model_without_ddp, dataset, scores)
        if stop_asked():
            break
    if stop_asked():
        logger.info(f"stopped after {run_iters[0]} iterations as asked (--stop_after_iters)")
    logger.info(f"training time {datetime.timedelta(seconds=int(time.time() - t0))}")
    if log_writer is not None:
        log_writer.close()
    return model_without_ddp


class DavisProbe:
    """DAVIS-2017 label propagation with the encoder being trained (eval/davis_propagate.py's code and
    defaults, the paper's Table 4b), every davis_every epochs and after the last; results in
    output_dir/davis. The sequences are read (and checked) when the run starts."""

    def __init__(self, args, device):
        self.every, self.last, self.device = args.davis_every, args.epochs - 1, device
        self.bf16 = amp_dtype(args) is torch.bfloat16
        self.args = davis_propagate.get_args_parser().parse_args(
            ["--davis_path", args.davis_path, "--split", args.davis_split,
             "--output_dir", os.path.join(args.output_dir, "davis")])
        self.sequences = davis_propagate.load_sequences(self.args)

    def __call__(self, model, epoch):
        """{'J&F-Mean': ..., 'J-Mean': ..., 'F-Mean': ...} at the chosen epochs, else {}."""
        if not (self.every and (epoch + 1) % self.every == 0 or epoch == self.last):
            return {}
        t0 = time.time()
        extractor = FeatureExtractor(model, self.device, self.args.batch_size, self.bf16)  # eval mode
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            davis_propagate.propagate_all(extractor, self.sequences, self.args)
        scores, _ = davis_propagate.score(self.sequences, self.args)
        logger.info(f"DAVIS ({len(self.sequences)} sequences, {time.time() - t0:.0f}s): "
                    f"J&F {scores['J&F-Mean']:.3f}, J {scores['J-Mean']:.3f}, F {scores['F-Mean']:.3f}")
        return {k: scores[k] for k in ("J&F-Mean", "J-Mean", "F-Mean")}


def write_epoch_log(args, epoch, stats, log_writer, model, dataset, davis_scores):
    """One JSON line in log.txt, epoch scalars and (every vis_every epochs) a reconstruction picture."""
    log = {**{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch,
           **{f"data_{k}": v for k, v in dataset.stats().items()}, **{f"davis_{k}": v for k, v in davis_scores.items()}}
    with open(os.path.join(args.output_dir, "log.txt"), "a") as f:
        f.write(json.dumps(log) + "\n")
    log_writer.add_scalar("epoch/skipped_videos", stats["skipped_videos"], epoch)
    for k, v in davis_scores.items():
        log_writer.add_scalar(f"davis/{k}", v, epoch)
    if args.vis_every and (epoch % args.vis_every == 0 or epoch + 1 == args.epochs):
        log_reconstruction(args, epoch, log_writer, model, dataset)
    log_writer.flush()


def log_reconstruction(args, epoch, log_writer, model, dataset):
    from visualize import reconstruction_grid
    device = next(model.parameters()).device
    frames = to_device(dataset.collate([dataset[0]]), device)[0][:1]  # the first pair of the first video
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # keep training's streams
        grid = reconstruction_grid(model, frames, args.mask_ratio, mask_ratio_f1=args.mask_ratio_f1)
    log_writer.add_image("reconstruction", grid, epoch, dataformats="HWC")


if __name__ == "__main__":
    run_script("SiamMAE pre-training", get_args_parser, main)
