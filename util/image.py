"""Image normalisation shared by training, evaluation and pictures (one place for the constants)."""
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(t):
    """uint8 RGB (..., 3, H, W) (or floats in 0..255) on any device -> float32, ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=t.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=t.device).view(3, 1, 1)
    return (t.float() / 255.0 - mean) / std


def denormalize(t):
    """Undo ImageNet normalisation: (..., 3, H, W) tensor -> values in [0, 1] for pictures."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=t.dtype, device=t.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=t.dtype, device=t.device).view(3, 1, 1)
    return (t * std + mean).clamp(0.0, 1.0)
