"""Patch features for label propagation: frames in, L2-normalised last-block ViT tokens out."""
import numpy as np
import torch
import torch.nn.functional as F

from eval.files import InputError

from util.image import IMAGENET_MEAN, IMAGENET_STD, normalize  # noqa: F401 (constants re-exported for tests)


def load_encoder(checkpoint, model_name=None):
    """The ViT encoder of a SiamMAE, MAE (``{'model': sd}``) or timm/DINO checkpoint, in eval mode.
    model_name (e.g. 'vit_small_patch16') is inferred from the weights when None."""
    import models_vit  # imported here so that scoring and tests without a model never need it
    try:
        model = models_vit.encoder_from_checkpoint(checkpoint, model_name)
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from None
    return model.eval()


def network_size(height, width, patch, short_side=None, size=None):
    """(H, W) the network sees for a (height, width) frame.

    size: (H, W) forced, each a multiple of the patch. Otherwise the short side becomes
    short_side with the aspect ratio kept, and both sides are rounded to a multiple of the patch.
    """
    if size is not None:
        if size[0] % patch or size[1] % patch or min(size) <= 0:
            raise InputError(f"--size {size[0]} {size[1]}: both sides must be positive multiples of the patch {patch}")
        return tuple(size)
    if short_side < patch:
        raise InputError(f"--short_side {short_side}: smaller than one patch ({patch} px)")
    scale = short_side / min(height, width)
    return tuple(max(patch, int(round(s * scale / patch)) * patch) for s in (height, width))


class FeatureExtractor:
    """Frames -> (N, h, w, D) float32 L2-normalised patch features on `device`.

    model: a VisionTransformer with ``forward_features`` and ``patch_embed.patch_size``.
    bf16: autocast the network to bfloat16 (CUDA only; features come back as float32).
    """

    def __init__(self, model, device="cpu", batch_size=8, bf16=False):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.patch = model.patch_embed.patch_size[0]
        self.batch_size = batch_size
        self.bf16 = bf16 and self.device.type == "cuda"

    def preprocess(self, frames, size):
        """frames: (N, H, W, 3) uint8 array or tensor -> (N, 3, *size) normalised float32 on the device."""
        x = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
        x = x.to(self.device).permute(0, 3, 1, 2).float()  # 0..255
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-2] > size[0] or x.shape[-1] > size[1])
        return normalize(x)

    @torch.inference_mode()
    def __call__(self, frames, size):
        """frames: (N, H, W, 3) uint8 (array, tensor, or list of (H, W, 3)); size: (H', W') network
        input, multiples of the patch. Returns (N, H'/p, W'/p, D) float32, unit norm per token."""
        x = self.preprocess(frames, size)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            feats = self.model.forward_features(x)
        return F.normalize(feats.float(), dim=-1)

    def iter_features(self, frames, size):
        """Features of an iterable of (H, W, 3) uint8 frames, computed batch_size frames at a time
        and yielded one (h, w, D) frame at a time (so a whole video is never held at once)."""
        batch = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == self.batch_size:
                yield from self(np.stack(batch), size)
                batch = []
        if batch:
            yield from self(np.stack(batch), size)
