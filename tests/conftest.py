"""Fixtures and helpers shared by several test files: the classification tests (fine-tuning, linear
probing) and the checks of ImageNet normalisation against hand-written statistics."""
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


# ImageNet statistics written out by hand (torchvision / MAE), RGB order: tests compare the code's
# normalisation against these, not against the constants the code imports.
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)


def hand_normalised(rgb):
    """(r, g, b) uint8 -> the ImageNet-normalised float vector, computed here."""
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, MEAN_RGB, STD_RGB)])


def captured_run(module, image_folder, out, monkeypatch, *extra):
    """Run a classification main (main_finetune / main_linprobe) up to engine_finetune.fit and return
    what fit would have been given: model, criterion, optimizer and keyword arguments."""
    import argparse

    import engine_finetune
    seen = {}

    def fake_fit(model, criterion, optimizer, scaler, loaders, device, args, **kw):
        seen.update(model=model, criterion=criterion, optimizer=optimizer, **kw)
        return {}
    monkeypatch.setattr(engine_finetune, "fit", fake_fit)
    argv = ["--data_path", image_folder, "--output_dir", str(out), "--model", "vit_tiny_patch16", "--input_size",
            "16", "--batch_size", "2", "--num_workers", "0", "--device", "cpu", *extra]
    module.main(argparse.ArgumentParser(parents=[module.get_args_parser()]).parse_args(argv))
    return seen
