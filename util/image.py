"""Image normalisation shared by training, evaluation and pictures (one place for the constants)."""
import functools

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=None)
def _mean_std(device):
    """(3, 1, 1) float32 mean and std on device, made once: the training step copies nothing to the
    device for them (a blocking copy per step otherwise)."""
    return (torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1))


def normalize(t):
    """uint8 RGB (..., 3, H, W) (or floats in 0..255) on any device -> float32, ImageNet-normalised."""
    mean, std = _mean_std(t.device)
    return (t.float() / 255.0 - mean) / std


def denormalize(t):
    """Undo ImageNet normalisation: (..., 3, H, W) tensor -> values in [0, 1] for pictures."""
    mean, std = _mean_std(t.device)
    return (t * std.to(t.dtype) + mean.to(t.dtype)).clamp(0.0, 1.0)
