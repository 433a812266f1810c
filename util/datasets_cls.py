# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Image classification data for fine-tuning and linear probing: an ImageNet-layout folder
(root/train/<class>/*.JPEG, root/val/<class>/*.JPEG), its transforms, and mixup/cutmix.

Training transforms: fine-tuning uses timm's RandAugment pipeline (random-resized crop, flip,
RandAugment, random erasing); linear probing only a random-resized crop and a flip. Evaluation:
resize the short side to input_size / crop_pct, centre crop (crop_pct = 224/256 up to 224 px).
"""
import logging
import os
import random

import numpy as np
import timm.data
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from timm.data import auto_augment
from timm.data.mixup import mixup_target
from torchvision import datasets, transforms

from util.image import IMAGENET_MEAN, IMAGENET_STD
from util.misc import SkipSampler

logger = logging.getLogger("siammae.datasets.classification")  # goes where the run logs (train.log)


class UnreadableImage(ValueError):
    """An image file that does not decode (empty, cut, not an image)."""


def read_rgb(path):
    """The ImageFolder loader: PIL image in RGB, or UnreadableImage naming the file."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImage(f"{path}: not a readable image (empty, or not an image format PIL knows)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{path}: not a readable image ({e})") from None


def posterize(img, bits_to_keep, **_):
    """Keep the bits_to_keep most significant bits of each channel; 0 bits gives a black image.
    timm 0.4.12's 'inc1' RandAugment asks for 0 bits at magnitude 10 (reached by m9 + mstd0.5 noise),
    which Pillow 11+ refuses (older Pillow returned black, the behaviour MAE's recipe was tuned with)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)


def mend_posterize(transform):
    """Point every posterize op of timm's auto-augment policies in transform at posterize()."""
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if isinstance(op, auto_augment.AugmentOp) and op.aug_fn is auto_augment.posterize:
                op.aug_fn = posterize
    return transform


def finetune_transform(args):
    """timm's training pipeline with RandAugment (args.aa; '' or 'none': without), colour jitter and
    random erasing."""
    policy = None if args.aa in ("", "none") else args.aa
    try:
        transform = timm.data.create_transform(
            input_size=args.input_size, is_training=True, color_jitter=args.color_jitter,
            auto_augment=policy, interpolation="bicubic", re_prob=args.reprob, re_mode=args.remode,
            re_count=args.recount, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    except (AssertionError, ValueError, KeyError) as e:  # timm 0.4.12 asserts on an unknown policy
        raise ValueError(f"--aa {args.aa}: not an auto-augment policy timm knows (e.g. rand-m9-mstd0.5-inc1, "
                         f"or none) ({e})") from None
    return mend_posterize(transform)


def linprobe_transform(args):
    """Weak augmentation: random-resized crop and horizontal flip."""
    return transforms.Compose([
        transforms.RandomResizedCrop(args.input_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(input_size):
    """Resize the short side to input_size / crop_pct (bicubic), then a centre crop of input_size."""
    crop_pct = 224 / 256 if input_size <= 224 else 1.0
    return transforms.Compose([
        transforms.Resize(int(input_size / crop_pct), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(input_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def image_folder(data_path, split, transform):
    """data_path/split as a torchvision ImageFolder; a one-line error when it is missing or empty."""
    root = os.path.join(data_path, split)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder (expected --data_path with train/ and val/ "
                                "holding one sub-folder per class)")
    try:
        return datasets.ImageFolder(root, transform=transform, loader=read_rgb)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{root}: {e}") from None


def build_datasets(args, train_transform):
    """(train, val) ImageFolders with the same classes; sets args.nb_classes when it is None.
    With --eval only val/ is read (train is None)."""
    if not args.data_path:
        raise ValueError("--data_path is required: a folder with train/ and val/, one sub-folder per class")
    val = image_folder(args.data_path, "val", eval_transform(args.input_size))
    train = None if args.eval else image_folder(args.data_path, "train", train_transform)
    if train is not None and val.classes != train.classes:
        only_one = sorted(set(val.classes) ^ set(train.classes)) or ["(same names, different order)"]
        raise ValueError(f"{args.data_path}: train/ and val/ have different class folders "
                         f"(in only one of them: {', '.join(only_one[:3])})")
    classes = val.classes if train is None else train.classes
    if args.nb_classes is None:
        args.nb_classes = len(classes)
    elif args.nb_classes < len(classes):
        raise ValueError(f"{args.data_path}: {'val' if train is None else 'train'}/ has {len(classes)} classes "
                         f"but --nb_classes is {args.nb_classes}")
    return train, val


def describe(train, val, args):
    """'<n> training images, <m> val images, <k> classes' for the start-up log."""
    images = "no training images (--eval)" if train is None else f"{len(train)} training images"
    return f"{images}, {len(val)} val images, {args.nb_classes} classes"


class Mixup(timm.data.Mixup):
    """timm's mixup/cutmix (with label smoothing), making the soft targets on the device of the
    batch: timm 0.4.12 always makes them on CUDA. x (N, 3, H, W) with N even, target (N,) ->
    mixed x, soft targets (N, num_classes)."""

    def __call__(self, x, target):
        if len(x) % 2:
            raise ValueError(f"mixup/cutmix needs an even batch, got {len(x)} images")
        mix = {"elem": self._mix_elem, "pair": self._mix_pair}.get(self.mode, self._mix_batch)
        lam = mix(x)
        return x, mixup_target(target, self.num_classes, lam, self.label_smoothing, device=target.device)


def build_mixup(args):
    """A Mixup when --mixup, --cutmix or --cutmix_minmax is active, else None."""
    if not (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None):
        return None
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                 prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                 label_smoothing=args.smoothing, num_classes=args.nb_classes)


def index_shard(n, rank, world_size):
    """Indices rank, rank + world_size, ... of n items: every item seen exactly once over all ranks
    (evaluation without DistributedSampler's padding duplicates)."""
    return list(range(rank, n, world_size))


class EpochKeyed(torch.utils.data.Dataset):
    """dataset[(epoch, index)] is dataset[index] with Python's, numpy's and torch's (CPU) generators seeded
    from (seed, epoch, index) while the transform draws: an image's augmentation depends on neither the
    loader workers nor the items before it, so a resumed run sees what an uninterrupted one would. In the
    main process (no workers) the caller's streams are put back afterwards (mixup draws from numpy's).
    An unreadable image is replaced by the next readable one (and logged once per process), as pre-training
    skips a corrupt video: one bad file in a million does not stop a run."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed = dataset, seed
        self.unreadable = set()

    def __len__(self):
        return len(self.dataset)

    def _seeded(self, epoch, index):
        seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        for k in range(len(self.dataset)):
            i = (index + k) % len(self.dataset)
            if i in self.unreadable:
                continue
            try:
                return self.dataset[i]
            except UnreadableImage as e:
                self.unreadable.add(i)
                logger.warning("skipped: %s; training uses the next image in its place", e)
        raise ValueError(f"{self.dataset.root}: no training image is readable")

    def __getitem__(self, key):
        if torch.utils.data.get_worker_info() is not None:  # a loader worker: its streams are its own
            return self._seeded(*key)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                return self._seeded(*key)
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


def build_loaders(train, val, args):
    """Shuffled (distributed) training loader that drops the last partial batch, its items keyed by
    (epoch, index) (None when train is None: --eval), and an evaluation loader over this rank's share
    of val. Neither draws from the global random streams."""
    common = dict(num_workers=args.num_workers, pin_memory=args.pin_mem and str(args.device).startswith("cuda"),
                  persistent_workers=args.num_workers > 0)
    val_loader = torch.utils.data.DataLoader(val, sampler=index_shard(len(val), args.rank, args.world_size),
                                             batch_size=args.batch_size, generator=torch.Generator(), **common)
    if train is None:
        return None, val_loader
    sampler = SkipSampler(torch.utils.data.DistributedSampler(train, args.world_size, args.rank, shuffle=True,
                                                              seed=args.seed), with_epoch=True)
    if len(train) < args.batch_size * args.world_size:
        raise ValueError(f"{args.data_path}/train: {len(train)} images, fewer than one batch of "
                         f"{args.batch_size} x {args.world_size} processes")
    train_loader = torch.utils.data.DataLoader(EpochKeyed(train, args.seed), sampler=sampler,
                                               batch_size=args.batch_size, drop_last=True,
                                               generator=torch.Generator().manual_seed(args.seed), **common)
    return train_loader, val_loader
