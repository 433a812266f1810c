import math

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


def siam(**kw):
    return models_siammae.siammae_vit_tiny_patch16(**{**TINY, **kw}).eval()


def test_joint_encoder_lets_f1_tokens_see_f2_and_siam_does_not():
    torch.manual_seed(0)
    frames = torch.randn(1, 2, 3, 64, 64)
    other = frames.clone()
    other[:, 1] = torch.randn_like(other[:, 1])  # another f2: its visible patches differ
    for encoder, depends in (("joint", True), ("siam", False)):
        model = siam(encoder=encoder)
        torch.manual_seed(1)
        (l1, _, _), _ = model.forward_encoder(frames, 0.75, 0.0)
        torch.manual_seed(1)
        (l1_other, _, _), _ = model.forward_encoder(other, 0.75, 0.0)
        assert l1.shape == (1, 65, 64)
        assert ((l1 - l1_other).abs().max() > 1e-4) == depends, encoder


def test_symmetric_masking_encodes_each_frame_with_its_own_tokens():
    """f1's latent depends on f1 only (the same masks: same seed), f2's on f2 only."""
    model = siam()
    torch.manual_seed(0)
    frames = torch.randn(2, 2, 3, 64, 64)
    other_f2, other_f1 = frames.clone(), frames.clone()
    other_f2[:, 1] = torch.randn_like(frames[:, 1])
    other_f1[:, 0] = torch.randn_like(frames[:, 0])
    out = {}
    for name, x in (("base", frames), ("f2", other_f2), ("f1", other_f1)):
        torch.manual_seed(1)
        (l1, _, _), (l2, _, _) = model.forward_encoder(x, 0.75, 0.75)
        out[name] = (l1, l2)
    torch.testing.assert_close(out["f2"][0], out["base"][0])  # a new f2 leaves f1's latent alone
    torch.testing.assert_close(out["f1"][1], out["base"][1])  # a new f1 leaves f2's latent alone
    assert (out["f2"][1] - out["base"][1]).abs().max() > 1e-4


def test_cross_decoder_has_no_self_attention_among_f2_tokens():
    """Cross decoder: each f2 token attends to f1 only (cross-attention, MLP), so a change in f2's visible
    content reaches the visible tokens (through the encoder) but not the [MASK] positions. The cross-self
    decoder's self-attention over f2 spreads it to the masked positions too."""
    frames = torch.randn(1, 2, 3, 64, 64)
    for decoder, spreads in (("cross", False), ("cross_self", True)):
        model = siam(decoder=decoder)
        torch.manual_seed(0)
        _, pred, mask = model(frames, mask_ratio=0.75)
        changed = frames.clone()
        changed[:, 1] += 3.0 * model.unpatchify((1 - mask)[..., None].expand(-1, -1, 192), (8, 8))
        torch.manual_seed(0)
        _, pred2, _ = model(changed, mask_ratio=0.75)
        moved = (pred2 - pred).abs().amax(-1)[0] > 1e-5
        assert moved[mask[0] == 0].all()  # the visible patches themselves
        assert bool(moved[mask[0] == 1].any()) == spreads, decoder
    assert not any(k.startswith("decoder_blocks.") and ".attn." in k for k in siam(decoder="cross").state_dict())


def test_joint_decoder_predicts_from_f2s_part_of_the_concatenation():
    """Joint decoder, written out: self-attention blocks over [f1 tokens (1 + 64), f2 tokens (1 + 64)];
    the prediction is decoder_pred(decoder_norm(.)) of f2's 64 patch tokens (its [CLS] dropped)."""
    model = siam(decoder="joint")
    frames = torch.randn(1, 2, 3, 64, 64)
    torch.manual_seed(0)
    _, pred, _ = model(frames, mask_ratio=0.75)
    torch.manual_seed(0)
    (l1, _, r1), (l2, _, r2) = model.forward_encoder(frames, 0.75, 0.0)
    y = torch.cat([model.restore_tokens(l1, r1), model.restore_tokens(l2, r2)], dim=1)
    for blk in model.decoder_blocks:
        y = blk(y)
    expected = model.decoder_pred(model.decoder_norm(y[:, 65 + 1:]))
    torch.testing.assert_close(pred, expected, rtol=1e-5, atol=1e-5)


def test_decoder_position_table_is_fixed_2d_sincos():
    """MAE: decoder position embeddings are a frozen 2-D sin-cos table, [CLS] row zero. Width D = 32:
    first D/2 channels encode the column, the rest the row, each as sin then cos of pos * 10000^(-i/(D/4))."""
    model = siam()
    table = model.decoder_pos_embed
    assert not table.requires_grad and table.shape == (1, 1 + 64, 32)
    assert torch.all(table[0, 0] == 0)
    row, col = 5, 3
    freqs = [10000 ** (-i / 8) for i in range(8)]
    expect = ([math.sin(col * f) for f in freqs] + [math.cos(col * f) for f in freqs]
              + [math.sin(row * f) for f in freqs] + [math.cos(row * f) for f in freqs])
    torch.testing.assert_close(table[0, 1 + row * 8 + col], torch.tensor(expect), rtol=1e-5, atol=1e-6)


def test_default_factory_decoder_has_16_heads_and_qkv_biases():
    model = models_siammae.siammae_vit_small_patch16()
    blk = model.decoder_blocks[0]
    assert blk.attn.num_heads == blk.cross_attn.num_heads == 16  # MAE: 512 wide, 16 heads of 32
    assert blk.cross_attn.q.bias is not None and blk.cross_attn.kv.bias is not None
    assert blk.attn.qkv.bias is not None and model.blocks[0].attn.qkv.bias is not None
