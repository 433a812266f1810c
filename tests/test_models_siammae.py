import pytest
import torch

import models_siammae
from models_siammae import SiamMAE

TINY = dict(img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=4,
            decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4)


def tiny(**kw):
    return models_siammae.siammae_vit_tiny_patch16(**{**TINY, **kw})


def pair(n=2, size=64):
    return torch.randn(n, 2, 3, size, size)


@pytest.mark.parametrize("encoder", ["siam", "joint"])
@pytest.mark.parametrize("decoder", ["cross_self", "cross", "joint"])
def test_variants_run_and_backpropagate(encoder, decoder):
    model = tiny(encoder=encoder, decoder=decoder)
    loss, pred, mask = model(pair(), mask_ratio=0.95)
    assert pred.shape == (2, 64, 8 * 8 * 3) and mask.shape == (2, 64)
    assert torch.all(mask.sum(1) == 64 - int(64 * 0.05))
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []  # DDP runs without find_unused_parameters


def test_asymmetric_masking_leaves_f1_whole():
    model = tiny()
    (l1, m1, r1), (l2, m2, r2) = model.forward_encoder(pair(), 0.95, 0.0)
    assert l1.shape == (2, 1 + 64, 64) and r1 is None and m1.sum() == 0
    assert l2.shape == (2, 1 + 3, 64) and torch.all(m2.sum(1) == 61)


def test_symmetric_masking():
    model = tiny()
    (l1, m1, _), (l2, m2, _) = model.forward_encoder(pair(), 0.75, 0.75)
    assert l1.shape == l2.shape == (2, 1 + 16, 64)
    assert not torch.equal(m1, m2)  # independent masks


def test_encoder_is_shared_one_set_of_weights():
    model = tiny()
    assert not any(n.startswith(("encoder1", "encoder2")) for n in model.state_dict())
    # encoding f1 in the pair gives the same tokens as encoding the frame alone with the same weights
    frames = pair(1)
    (l1, _, _), _ = model.forward_encoder(frames, 0.95, 0.0)
    alone = model.feature_norm(model.forward_tokens(frames[:, 0]))
    torch.testing.assert_close(l1, alone, rtol=1e-5, atol=1e-5)
    swapped = frames.flip(1)
    _, (l2, _, _) = model.forward_encoder(swapped, 0.0, 0.0)
    torch.testing.assert_close(l2, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder", ["cross_self", "cross", "joint"])
def test_prediction_depends_on_f1(decoder):
    model = tiny(decoder=decoder).eval()
    frames = pair(1)
    other = frames.clone()
    other[:, 0] = torch.randn_like(other[:, 0])
    torch.manual_seed(0)
    _, p1, m1 = model(frames)
    torch.manual_seed(0)
    _, p2, m2 = model(other)
    assert torch.equal(m1, m2)
    assert (p1 - p2).abs().max() > 1e-4
    # and changing the masked part of f2 changes nothing in the prediction
    hidden = frames.clone()
    hidden[:, 1] += 5 * model.unpatchify(m1.unsqueeze(-1).expand(-1, -1, 8 * 8 * 3), (8, 8))
    torch.manual_seed(0)
    _, p3, _ = model(hidden)
    torch.testing.assert_close(p1, p3)


@pytest.mark.parametrize("ratio, keep", [(0.5, 32), (0.75, 16)])
def test_grid_masking_pattern(ratio, keep):
    model = tiny(mask_pattern="grid")
    x = torch.randn(3, 64, 64)
    kept, mask, _ = model.mask_frame(x, ratio)
    assert kept.shape == (3, keep, 64)
    grid = mask[0].reshape(8, 8)
    assert torch.equal(mask[0], mask[1])
    if ratio == 0.5:
        assert grid[0, 0] == 0 and grid[0, 1] == 1 and grid[1, 0] == 1 and grid[1, 1] == 0
    else:
        assert grid[0, 0] == 0 and grid[0, 1] == 1 and grid[1, 1] == 1 and grid[2, 2] == 0
    with pytest.raises(ValueError, match="grid masking"):
        model.mask_frame(x, 0.9)


def test_forward_features_any_size():
    model = tiny()
    feats = model.forward_features(torch.randn(2, 3, 48, 80))
    assert feats.shape == (2, 6, 10, 64)
    with pytest.raises(ValueError, match="multiple of the patch"):
        model.forward_features(torch.randn(1, 3, 50, 64))


def test_bad_options():
    with pytest.raises(ValueError, match="decoder"):
        tiny(decoder="nope")
    with pytest.raises(ValueError, match="frames of shape"):
        tiny()(torch.randn(2, 3, 64, 64))


def test_factories_and_encoder_names_match_mae():
    model = models_siammae.siammae_vit_small_patch16()
    assert model.embed_dim == 384 and len(model.blocks) == 12 and len(model.decoder_blocks) == 8
    assert model.decoder_embed.out_features == 512
    assert models_siammae.siammae_vit_small_patch8().patch_embed.patch_size == (8, 8)
    assert "blocks.0.attn.qkv.weight" in model.state_dict() and "norm.weight" in model.state_dict()


def test_tiny_siammae_overfits_one_pair():
    torch.manual_seed(0)
    model = SiamMAE(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4, decoder_embed_dim=64,
                    decoder_depth=1, decoder_num_heads=4, mlp_ratio=2.)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    f1 = torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy])
    frames = torch.stack([f1, f1.roll(4, dims=2)]).unsqueeze(0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.)
    with torch.no_grad():
        first = sum(model(frames, mask_ratio=0.75)[0].item() for _ in range(8)) / 8
    for _ in range(250):
        loss, _, _ = model(frames, mask_ratio=0.75)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = sum(model(frames, mask_ratio=0.75)[0].item() for _ in range(8)) / 8
    assert last < 0.1 * first, (first, last)


def test_amp_residual_keeps_the_stream_in_the_autocast_dtype_close_to_float32():
    torch.manual_seed(0)
    base, fast = tiny(), tiny(amp_residual=True)
    fast.load_state_dict(base.state_dict())
    dtypes = {}
    fast.blocks[0].register_forward_pre_hook(lambda m, a: dtypes.__setitem__("encoder", a[0].dtype))
    fast.decoder_blocks[0].register_forward_pre_hook(lambda m, a: dtypes.__setitem__("decoder", (a[0].dtype, a[1].dtype)))
    frames = pair(4)

    def loss_and_grad(model, amp):
        torch.manual_seed(1)  # the same masks
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss, _, _ = model(frames)
        model.zero_grad()
        loss.backward()
        return loss.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    (l_base, g_base), (l_fast, g_fast) = loss_and_grad(base, True), loss_and_grad(fast, True)
    assert dtypes == {"encoder": torch.bfloat16, "decoder": (torch.bfloat16, torch.bfloat16)}
    assert abs(l_fast - l_base) < 2e-3 * l_base
    assert torch.nn.functional.cosine_similarity(g_fast, g_base, dim=0) > 0.999
    (l_base, g_base), (l_fast, g_fast) = loss_and_grad(base, False), loss_and_grad(fast, False)
    assert torch.equal(l_base, l_fast) and torch.equal(g_base, g_fast)  # no autocast: nothing changes


def test_decoder_mlp_ratio_sets_the_decoder_mlps_only():
    model = tiny(decoder_mlp_ratio=8)  # CropMAE: 2048-wide MLPs at width 256
    assert model.decoder_blocks[0].mlp.fc1.weight.shape == (8 * 32, 32)
    assert model.blocks[0].mlp.fc1.weight.shape == (4 * 64, 64)
    assert tiny().decoder_blocks[0].mlp.fc1.weight.shape == (4 * 32, 32)  # default: the encoder's ratio


def test_siammae_loss_is_normalised_mse_on_f2_masked_patches():
    model = models_siammae.siammae_vit_tiny_patch16(img_size=32, patch_size=8, depth=1, decoder_embed_dim=32,
                                                    decoder_depth=1, decoder_num_heads=4)
    assert model.norm_pix_loss is True  # the paper's and README's default
    frames = torch.randn(2, 2, 3, 32, 32)
    torch.manual_seed(0)
    loss, pred, mask = model(frames)
    # independent: patches of f2 by slicing, per-patch normalised
    t = frames[:, 1].unfold(2, 8, 8).unfold(3, 8, 8)  # (N, C, h, w, p, q)
    t = t.permute(0, 2, 3, 4, 5, 1).reshape(2, 16, 192)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** .5
    per_patch = ((pred - t) ** 2).mean(-1)
    torch.testing.assert_close(loss, per_patch[mask.bool()].mean())


def test_model_call_leaves_f1_whole_by_default():
    model = models_siammae.siammae_vit_tiny_patch16(img_size=32, patch_size=8, depth=1, decoder_embed_dim=32,
                                                    decoder_depth=1, decoder_num_heads=4)
    seen = []
    real = model.mask_frame
    model.mask_frame = lambda x, r: seen.append(r) or real(x, r)
    model(torch.randn(1, 2, 3, 32, 32))
    assert seen == [0.0, 0.95]
