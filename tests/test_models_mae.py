import pytest
import torch

import models_mae
from tests.reference_mae import ReferenceMAE

TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
            decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4)


def tiny_mae(**kw):
    return models_mae.mae_vit_tiny_patch16(**{**TINY, **kw})


def test_patchify_unpatchify_round_trip():
    model = tiny_mae()
    imgs = torch.randn(3, 3, 32, 32)
    x = model.patchify(imgs)
    assert x.shape == (3, 16, 8 * 8 * 3)
    # patch (row 1, col 2) holds the pixels [8:16, 16:24] in (p, q, c) order
    assert torch.equal(x[0, 1 * 4 + 2].reshape(8, 8, 3), imgs[0, :, 8:16, 16:24].permute(1, 2, 0))
    assert torch.equal(model.unpatchify(x), imgs)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_masking_keeps_exact_count(ratio):
    model = tiny_mae()
    x = torch.randn(4, 16, 64)
    kept, mask, ids_restore = model.random_masking(x, ratio)
    keep = int(16 * (1 - ratio))
    assert kept.shape == (4, keep, 64)
    assert torch.all(mask.sum(1) == 16 - keep)
    # the kept tokens are exactly the unmasked ones
    for i in range(4):
        visible = x[i][mask[i] == 0]
        assert sorted(visible[:, 0].tolist()) == sorted(kept[i, :, 0].tolist())
    assert torch.equal(torch.sort(ids_restore, 1).values, torch.arange(16).expand(4, -1))


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_numerically_equal_to_reference_mae(norm_pix_loss):
    ours = tiny_mae(norm_pix_loss=norm_pix_loss)
    ref = ReferenceMAE(32, 8, 64, 2, 4, 32, 2, 4, norm_pix_loss)
    missing = ref.load_state_dict(ours.state_dict(), strict=True)
    assert not missing.missing_keys
    imgs = torch.randn(2, 3, 32, 32)
    torch.manual_seed(7)
    loss, pred, mask = ours(imgs, mask_ratio=0.75)
    torch.manual_seed(7)
    rloss, rpred, rmask = ref(imgs, 0.75)
    assert torch.equal(mask, rmask)
    torch.testing.assert_close(pred, rpred, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, rloss, rtol=1e-4, atol=1e-6)


def test_released_key_format():
    model = models_mae.mae_vit_base_patch16()
    sd = model.state_dict()
    assert len(sd) == 254
    assert sd["pos_embed"].shape == (1, 197, 768)
    assert sd["decoder_pos_embed"].shape == (1, 197, 512)
    assert sd["blocks.11.attn.qkv.weight"].shape == (2304, 768)
    assert sd["decoder_blocks.7.mlp.fc2.weight"].shape == (512, 2048)
    assert sd["decoder_pred.weight"].shape == (768, 512)
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    n_params = sum(p.numel() for p in model.parameters())
    assert 111e6 < n_params < 113e6  # MAE ViT-B with its 512-d, 8-block decoder


def test_loss_only_on_masked_patches():
    model = tiny_mae()
    imgs = torch.randn(2, 3, 32, 32)
    target = model.patchify(imgs)
    mask = torch.zeros(2, 16)
    mask[:, :5] = 1
    pred = target.clone()
    pred[:, 5:] += 100.  # wrong only where visible: must not count
    assert model.forward_loss(imgs, pred, mask).item() == pytest.approx(0., abs=1e-10)
    pred[:, :5] += 1.
    assert model.forward_loss(imgs, pred, mask).item() == pytest.approx(1., rel=1e-5)


def test_mask_token_initialised_like_mae():
    """Kills MM3. MAE: torch.nn.init.normal_(self.mask_token, std=.02); 512 draws give std within
    a few % of 0.02."""
    torch.manual_seed(0)
    model = models_mae.MaskedAutoencoderViT(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=4,
                                            decoder_embed_dim=512, decoder_depth=1, decoder_num_heads=4)
    assert 0.017 < float(model.mask_token.detach().std()) < 0.023
    assert abs(float(model.mask_token.detach().mean())) < 0.004
