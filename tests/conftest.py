"""Fixtures shared by the classification tests (fine-tuning, linear probing)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import models_siammae

TINY = dict(img_size=32, patch_size=8, depth=2)
DECODER = dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)


def make_image_folder(root, classes=2, per_class=4, size=32):
    """root/{train,val}/class_k/i.png, random colour images (PIL)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k in range(classes):
            os.makedirs(root / split / f"class_{k}")
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"class_{k}" / f"{i}.png")
    return str(root)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def siammae_checkpoint(tmp_path_factory):
    """A tiny SiamMAE saved as {'model': state_dict}: returns (path, model)."""
    model = models_siammae.siammae_vit_tiny_patch16(**TINY, **DECODER)
    path = tmp_path_factory.mktemp("ckpt") / "siammae.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path), model
