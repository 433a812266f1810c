"""Safe checkpoint loading, atomic saving, and weight transfer between model families.

Loading never executes code from a file: ``torch.load(weights_only=True)`` with an explicit
allow-list (``ALLOWED_GLOBALS``). Transfer (``load_matching``) copies every tensor whose name and
shape match, adapts position embeddings and patch projections to another patch grid, and reports
what was loaded, what stayed freshly initialised and what was ignored. Because SiamMAE's blocks keep
MAE's and timm's parameter names, a released MAE checkpoint initialises a SiamMAE through it.
"""
import argparse
import logging
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from util.pos_embed import resize_pos_embed

# The only non-tensor, non-builtin objects our own (and MAE's) training checkpoints hold.
ALLOWED_GLOBALS = [argparse.Namespace]

ENCODER_PREFIXES = ("patch_embed.", "blocks.")
ENCODER_KEYS = ("cls_token", "pos_embed", "norm.weight", "norm.bias")
STRIP_PREFIXES = ("module.", "backbone.", "_orig_mod.")
POS_EMBED_KEYS = ("pos_embed", "decoder_pos_embed")
PATCH_DEPENDENT_KEYS = ("decoder_pred.weight", "decoder_pred.bias")


def load_checkpoint(path):
    """Load a checkpoint file safely onto the CPU. Raises a one-line error for a missing file,
    a file that is not a checkpoint, or one that holds pickled objects outside the allow-list."""
    if os.path.isdir(path):
        raise FileNotFoundError(f"{path}: a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if isinstance(e, pickle.UnpicklingError) and found:
            raise ValueError(f"{path}: refused: it holds a pickled {found.group(1)}, outside the allow-list; "
                             "nothing in it was executed") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first[:120]})") from None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a lost mount); the previous file is unchanged."""


def save_atomic(obj, path):
    """torch.save to a temporary file beside path, fsync, then rename over path: a crash
    during the save leaves the previous file whole. The temporary name is fixed (one writer per
    path: the first process), so a file left by a killed save is overwritten by the next one
    rather than piling up at each requeue. A failed write raises CheckpointWriteError, with the free
    space left there (torch.save reports a full disk as a zip writer's "unexpected pos")."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
        free = shutil.disk_usage(directory).free / 2 ** 30
        kept = "the previous file is unchanged" if os.path.exists(path) else "nothing was written"
        raise CheckpointWriteError(f"{path}: cannot write the checkpoint ({reason}; {free:.2f} GiB free there); "
                                   f"{kept}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_training_checkpoint(ckpt):
    """True for a checkpoint written by our training loops (training_state: model, optimizer, epoch,
    iteration, random streams)."""
    return isinstance(ckpt, dict) and {"model", "optimizer", "epoch", "iteration", "rng"} <= set(ckpt)


def is_mae_training_checkpoint(ckpt):
    """True for a checkpoint written by MAE's own training scripts (model, optimizer, the epoch just
    finished; no position inside it, no random streams)."""
    return isinstance(ckpt, dict) and {"model", "optimizer", "epoch"} <= set(ckpt) and not is_training_checkpoint(ckpt)


def model_state_dict(ckpt, source="checkpoint"):
    """The weights in a checkpoint: under 'model' (MAE, ours), 'state_dict', 'teacher' (DINO),
    or the dict itself (timm/DINO releases); wrapper prefixes ('module.', 'backbone.') stripped."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"{source}: expected a dict of weights, found {type(ckpt).__name__}")
    for key in ("model", "state_dict", "teacher"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    sd = {_strip(k): v for k, v in ckpt.items() if torch.is_tensor(v)}
    if not sd:
        raise ValueError(f"{source}: holds no weight tensors")
    return sd


def _strip(key):
    changed = True
    while changed:
        changed = False
        for p in STRIP_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def encoder_state_dict(sd):
    """Only the ViT encoder's tensors of a state dict (drops decoder, heads, mask token)."""
    return {k: v for k, v in sd.items() if k.startswith(ENCODER_PREFIXES) or k in ENCODER_KEYS}


@dataclass
class LoadReport:
    source: str
    loaded: list = field(default_factory=list)
    adapted: list = field(default_factory=list)
    new: list = field(default_factory=list)
    ignored: list = field(default_factory=list)

    def summary(self):
        parts = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        if self.adapted:
            parts.append(f"adapted {compact_keys(self.adapted)}")
        parts.append(f"new (kept initialised) {compact_keys(self.new) or 'none'}")
        parts.append(f"ignored {compact_keys(self.ignored) or 'none'}")
        return "; ".join(parts)


def compact_keys(keys):
    """['blocks.0.attn.q', 'blocks.1.attn.q'] -> 'blocks.*.attn.q' (sorted, unique, comma-joined)."""
    return ", ".join(sorted({re.sub(r"\.\d+\.", ".*.", k) for k in keys}))


def _resample_patch_kernel(weight, size):
    """(D, C, p, p) -> (D, C, size, size): area averaging when shrinking (each new tap the mean of the
    taps it covers), bilinear when growing, scaled by (p / size)^2; then each filter's sum is made
    exactly the old one's (a uniform offset, zero for whole-number factors), so a constant image gives
    the same response."""
    old, w = weight.shape[-1], weight.float()
    out = F.interpolate(w, size=(size, size), mode="area" if size < old else "bilinear",
                        **({} if size < old else {"align_corners": False})) * (old / size) ** 2
    out += (w.sum((1, 2, 3)) - out.sum((1, 2, 3)))[:, None, None, None] / out[0].numel()
    return out.to(weight.dtype)


def load_matching(model, sd, source="checkpoint"):
    """Copy the tensors of sd into model wherever names match; adapt position tables and the patch
    kernel to the model's grid; everything else of the model stays as initialised.
    Raises a one-line ValueError when nothing matches or a shape conflicts. Returns a LoadReport."""
    target = model.state_dict()
    report = LoadReport(source)
    patch_differs = ("patch_embed.proj.weight" in sd and "patch_embed.proj.weight" in target
                     and sd["patch_embed.proj.weight"].shape[-1] != target["patch_embed.proj.weight"].shape[-1])
    update = {}
    for k, v in sd.items():
        if k not in target:
            report.ignored.append(k)
        elif v.shape == target[k].shape:
            update[k] = v
            report.loaded.append(k)
        elif k in POS_EMBED_KEYS and v.shape[-1] == target[k].shape[-1]:
            side = int(round((target[k].shape[1] - 1) ** 0.5))
            update[k] = resize_pos_embed(v, (side, side))
            report.adapted.append(k)
        elif k == "patch_embed.proj.weight" and v.shape[:2] == target[k].shape[:2]:
            update[k] = _resample_patch_kernel(v, target[k].shape[-1])
            report.adapted.append(k)
        elif k in PATCH_DEPENDENT_KEYS and patch_differs:
            report.ignored.append(k)
        else:
            raise ValueError(f"{source}: '{k}' has shape {tuple(v.shape)} but the model expects "
                             f"{tuple(target[k].shape)} (a different architecture?{_describe_encoder(sd)})")
    if not update:
        raise ValueError(f"{source}: none of its {len(sd)} tensors matches the model "
                         f"(first keys: {', '.join(list(sd)[:3])})")
    report.new = [k for k in target if k not in update]
    target.update(update)
    model.load_state_dict(target)
    return report


def _describe_encoder(sd):
    """' the file holds a ViT of width W, patch P, D blocks: check --model' when sd has a ViT encoder."""
    weight = sd.get("patch_embed.proj.weight")
    if weight is None or weight.dim() != 4:
        return ""
    depth = 1 + max((int(k.split(".")[1]) for k in sd if re.match(r"blocks\.\d+\.", k)), default=-1)
    return (f" the file holds a ViT of width {weight.shape[0]}, patch {weight.shape[-1]}, {depth} blocks: "
            "check --model (vit_base_patch16 holds MAE's ViT-B weights; siammae_vit_base_patch16 in pre-training)")


def load_exact(model, sd, source="checkpoint"):
    """Load a state dict that must fit the model exactly (resuming our own checkpoints);
    a mismatch is a one-line error naming the first offending key."""
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    if missing or unexpected:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise ValueError(f"{source}: does not fit this model ({what}; {len(missing)} missing, "
                         f"{len(unexpected)} unexpected keys): was it saved by a run with other model options?")
    for k, v in sd.items():
        if v.shape != target[k].shape and k.startswith("head.") and v.shape[1:] == target[k].shape[1:]:
            raise ValueError(f"{source}: its classifier has {v.shape[0]} classes, this run {target[k].shape[0]} "
                             "(--nb_classes, or the class folders of --data_path): was it trained on another data set?")
        if v.shape != target[k].shape:
            raise ValueError(f"{source}: '{k}' has shape {tuple(v.shape)} but the model expects "
                             f"{tuple(target[k].shape)}: was it trained with another --model"
                             f"{' or --input_size' if 'pos_embed' in k else ''}?")
    model.load_state_dict(sd)


# ---------------------------------------------------------------- training state
LAST = "checkpoint-last.pth"


def find_resume(output_dir, resume=""):
    """The checkpoint to resume from: output_dir/checkpoint-last.pth when it exists (a requeued
    job continues its own run), else the --resume argument ('' for none)."""
    last = os.path.join(output_dir, LAST) if output_dir else ""
    return last if last and os.path.isfile(last) else resume


def training_state(model, optimizer, scaler, epoch, iteration, args):
    """Everything a run needs to continue exactly: weights, optimizer, grad scaler, position
    (epoch, next iteration in it) and random-number-generator states."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch, "iteration": iteration, "args": args, "rng": _rng_states_of_all_ranks()}


def _rng_states_of_all_ranks():
    """[rank 0's, rank 1's, ...] generator states: torch's (CPU, CUDA), Python's and numpy's (mixup draws
    from it), in types weights_only loading accepts (a collective call when distributed)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # ("MT19937", uint32 keys, ...)
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": (torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if not dist.is_available() or not dist.is_initialized():
        return [rng]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng)
    return states


def restore_training_state(ckpt, model, optimizer, scaler, source="checkpoint"):
    """Inverse of training_state. Returns (start_epoch, start_iteration). An MAE-format training
    checkpoint continues as MAE's --resume does: at the epoch after the saved one, streams reseeded."""
    load_exact(model, ckpt["model"], source)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as e:
        raise ValueError(f"{source}: its optimizer state does not fit this run's parameter groups (saved "
                         f"with other options or by an earlier version): {e}") from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    mae = is_mae_training_checkpoint(ckpt)
    epoch, it = (int(ckpt["epoch"]) + 1, 0) if mae else (ckpt["epoch"], ckpt["iteration"])
    states = ckpt.get("rng") or []
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if len(states) != world:  # MAE's format, or another process count: continue, not bit-exactly
        logging.getLogger("siammae").warning(
            f"{source}: " + ("MAE's training format (no random streams): continuing at epoch {epoch}, " if mae
                             else f"saved by {len(states)} processes, resumed by {world}: ") + "random streams reseeded")
        seed = hash((epoch, it, rank)) % 2 ** 31
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        return epoch, it
    rng = states[rank]
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "python" in rng:
        random.setstate(rng["python"])
    if "numpy" in rng:
        keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return epoch, it
