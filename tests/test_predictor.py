"""Pooling and action-conditioned predictor: causality, KV cache, ensemble, learning."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wmplan.worldmodel.ac_training import Window, open_loop_errors, training_losses
from wmplan.worldmodel.pooling import pool_latents
from wmplan.worldmodel.predictor import ACPredictor, ACPredictorConfig

N, D, A, P = 4, 16, 4, 3


def make_predictor(ensemble: int = 1, proprio: bool = True, seed: int = 0, **kw) -> ACPredictor:
    torch.manual_seed(seed)
    cfg = ACPredictorConfig(latent_dim=D, tokens_per_frame=N, grid=(2, 2), action_dim=A,
                            proprio_dim=P if proprio else None, embed_dim=kw.pop("embed_dim", 32),
                            depth=kw.pop("depth", 2), num_heads=2, ensemble=ensemble, **kw)
    return ACPredictor(cfg).eval()


def inputs(B: int, T: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, N, D, generator=g), torch.randn(B, T, P, generator=g),
            torch.randn(B, T, A, generator=g))


# ---- pooling ---------------------------------------------------------------------------------
def test_pooling_shapes_param_free_and_identity():
    x = torch.randn(2, 3, 16, 8)
    out = pool_latents(x, (4, 4), 2)
    assert out.shape == (2, 3, 4, 8)
    # top-left pooled token = layer-normed mean of the 2x2 top-left patch block
    block = x[:, :, [0, 1, 4, 5]].mean(2)
    torch.testing.assert_close(out[:, :, 0], F.layer_norm(block, (8,)))
    assert torch.allclose(pool_latents(x, (4, 4), 1)[:, :, 0], F.layer_norm(x.mean(2), (8,)), atol=1e-6)
    # k = grid side and k = None are the identity up to layer norm
    torch.testing.assert_close(pool_latents(x, (4, 4), 4), F.layer_norm(x, (8,)))
    torch.testing.assert_close(pool_latents(x, (4, 4), None), F.layer_norm(x, (8,)))
    # parameter-free: nothing to train, output per token is standardised
    o = pool_latents(x * 100 + 5, (4, 4), 2)
    assert torch.allclose(o.mean(-1), torch.zeros(()), atol=1e-5)
    with pytest.raises(ValueError):
        pool_latents(x, (4, 3), 2)


# ---- config ----------------------------------------------------------------------------------
def test_config_round_trip_and_unknown_fields():
    cfg = make_predictor(ensemble=3).config
    assert ACPredictorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field.*bogus"):
        ACPredictorConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="missing"):
        ACPredictorConfig.from_dict({"latent_dim": 4})
    with pytest.raises(ValueError, match="grid"):
        ACPredictorConfig(latent_dim=D, tokens_per_frame=5, grid=(2, 2), action_dim=A)


# ---- block-causal ----------------------------------------------------------------------------
def test_forward_shapes_and_block_causality():
    m = make_predictor(ensemble=2)
    lat, prop, act = inputs(2, 5)
    pk, pp = m(lat, prop, act)
    assert pk.shape == (2, 5, 2, N, D) and pp.shape == (2, 5, P)
    t = 3
    act2 = act.clone()
    act2[:, t] += 1.0
    lat2 = lat.clone()
    lat2[:, t + 1] += 1.0
    pk2, pp2 = m(lat2, prop, act2)
    # steps before t: bit-identical; step t and later: changed
    assert torch.equal(pk2[:, :t], pk[:, :t]) and torch.equal(pp2[:, :t], pp[:, :t])
    assert (pk2[:, t] - pk[:, t]).abs().max() > 1e-4
    assert (pk2[:, t + 1] - pk[:, t + 1]).abs().max() > 1e-4
    # an earlier action influences every later prediction
    act3 = act.clone()
    act3[:, 0] += 1.0
    pk3, _ = m(lat, prop, act3)
    assert all((pk3[:, s] - pk[:, s]).abs().max() > 1e-5 for s in range(5))


def test_rollout_depends_only_on_past_actions():
    m = make_predictor()
    lat, prop, _ = inputs(2, 1)
    act = torch.randn(2, 6, A)
    r = m.rollout(lat, prop, act)
    act2 = act.clone()
    act2[:, 4] = 0.0
    r2 = m.rollout(lat, prop, act2)
    assert torch.equal(r.latents[:, :4], r2.latents[:, :4])
    assert (r.latents[:, 4:] - r2.latents[:, 4:]).abs().max() > 1e-5


# ---- KV cache ----------------------------------------------------------------------------------
@pytest.mark.parametrize("Tc,proprio,ensemble", [(1, True, 1), (3, True, 3), (2, False, 2)])
def test_cached_rollout_matches_uncached(Tc, proprio, ensemble):
    m = make_predictor(ensemble=ensemble, proprio=proprio)
    B, S, H = 2, 3, 5
    lat, prop, ca = inputs(B, Tc)
    prop = prop if proprio else None
    act = torch.randn(B * S, H, A, generator=torch.Generator().manual_seed(7))
    ctx_a = ca[:, :Tc - 1] if Tc > 1 else None
    with torch.no_grad():
        fast = m.rollout(lat, prop, act, ctx_a, use_cache=True)
        ref = m.rollout(lat, prop, act, ctx_a, use_cache=False)
        # samples_per_ctx broadcasting == explicit repetition of the context per sample
        rep = m.rollout(lat.repeat_interleave(S, 0), None if prop is None else prop.repeat_interleave(S, 0),
                        act, None if ctx_a is None else ctx_a.repeat_interleave(S, 0))
    assert fast.latents.shape == (B * S, H, N, D)
    assert (fast.latents - ref.latents).abs().max() <= 1e-5
    assert (fast.latents - rep.latents).abs().max() <= 1e-5
    if proprio:
        assert fast.proprio.shape == (B * S, H, P)
        assert (fast.proprio - ref.proprio).abs().max() <= 1e-5
    else:
        assert fast.proprio is None
    if ensemble > 1:
        assert (fast.disagreement - ref.disagreement).abs().max() <= 1e-5
    else:
        assert fast.disagreement is None
    # one-step cached rollout equals teacher forcing on the same inputs
    if Tc == 1:
        pk, _ = m(lat.repeat_interleave(S, 0), None if prop is None else prop.repeat_interleave(S, 0), act[:, :1])
        assert (pk[:, 0].mean(1) - fast.latents[:, 0]).abs().max() <= 1e-5


def test_cached_rollout_few_tokens_and_gradients():
    # G = 2 tokens per step, head dim 16: on CPU the first steps attend over zero-padded,
    # masked key buffers; with autograd recording the cache grows functionally instead.
    torch.manual_seed(0)
    m = ACPredictor(ACPredictorConfig(latent_dim=D, tokens_per_frame=1, grid=(1, 1), action_dim=A,
                                      embed_dim=32, depth=2, num_heads=2)).eval()
    B, S, H = 2, 3, 8
    lat = torch.randn(B, 1, 1, D)
    act = torch.randn(B * S, H, A).requires_grad_(True)
    fast = m.rollout(lat, None, act)
    ref = m.rollout(lat, None, act, use_cache=False)
    with torch.no_grad():
        buffered = m.rollout(lat, None, act)
    assert (fast.latents - ref.latents).abs().max() <= 1e-5
    assert (buffered.latents - ref.latents).abs().max() <= 1e-5
    (g_fast,) = torch.autograd.grad(fast.latents.square().sum(), act)
    (g_ref,) = torch.autograd.grad(ref.latents.square().sum(), act)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk_tokens", [12, 60])  # 2 rows (part of an env) / 10 rows (2 envs)
def test_cpu_chunked_rollout_matches_one_call(monkeypatch, chunk_tokens):
    import wmplan.worldmodel.predictor as predictor

    m = make_predictor(ensemble=2)
    B, S, H, Tc = 3, 5, 4, 2
    lat, prop, ca = inputs(B, Tc)
    act = torch.randn(B * S, H, A, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        one = m.rollout(lat, prop, act, ca[:, :1])
        monkeypatch.setattr(predictor, "CPU_CHUNK_TOKENS", chunk_tokens)
        chunked = m.rollout(lat, prop, act, ca[:, :1])
    for f in ("latents", "proprio", "disagreement"):
        torch.testing.assert_close(getattr(chunked, f), getattr(one, f), rtol=0, atol=1e-6)


def test_rollout_shape_errors():
    m = make_predictor()
    lat, prop, _ = inputs(2, 2)
    with pytest.raises(ValueError, match="ctx_actions"):
        m.rollout(lat, prop, torch.randn(2, 3, A))
    with pytest.raises(ValueError, match="multiple"):
        m.rollout(lat[:, :1], prop[:, :1], torch.randn(3, 3, A))
    with pytest.raises(ValueError, match="proprio"):
        m.rollout(lat[:, :1], None, torch.randn(2, 3, A))


# ---- ensemble ----------------------------------------------------------------------------------
def test_ensemble_disagreement_zero_for_identical_heads_and_grows():
    m = make_predictor(ensemble=3)
    lat, prop, _ = inputs(2, 1)
    act = torch.randn(2, 4, A)
    w = m.latent_head.weight.data.view(3, D, -1)
    b = m.latent_head.bias.data.view(3, D)
    w[1:] = w[0]
    b[1:] = b[0]
    with torch.no_grad():
        d0 = m.rollout(lat, prop, act).disagreement
        assert d0.shape == (2, 4) and d0.abs().max() < 1e-10
        base = w.clone()
        noise = torch.randn_like(w[1:])
        ds = []
        for scale in (0.01, 0.1):
            w[1:] = base[1:] + scale * noise
            ds.append(m.rollout(lat, prop, act).disagreement.mean())
    assert 0 < ds[0] < ds[1]


# ---- learning ------------------------------------------------------------------------------------
def linear_dynamics_windows(n: int, W: int, seed: int) -> Window:
    """z_{t+1} = LN(z_t R + a_t B): rotation plus an action-driven drift, per token."""
    g = torch.Generator().manual_seed(123)  # fixed dynamics, varying data
    R = torch.linalg.qr(torch.randn(D, D, generator=g))[0]
    R = 0.9 * torch.eye(D) + 0.1 * R
    Bm = torch.randn(A, D, generator=g) * 0.5
    g = torch.Generator().manual_seed(seed)
    z = F.layer_norm(torch.randn(n, N, D, generator=g), (D,))
    acts = torch.randn(n, W - 1, A, generator=g)
    zs = [z]
    for t in range(W - 1):
        z = F.layer_norm(z @ R + (acts[:, t] @ Bm)[:, None], (D,))
        zs.append(z)
    return Window(torch.stack(zs, 1), acts, None)


def test_training_reduces_loss_and_beats_copy_last(one_thread):
    torch.manual_seed(0)
    m = make_predictor(ensemble=2, proprio=False, embed_dim=48, depth=2).train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    val = linear_dynamics_windows(256, 6, seed=99)
    first = None
    for step in range(150):
        w = linear_dynamics_windows(64, 4, seed=step)
        loss = training_losses(m, w, context=1, rollout_steps=3, kind="l1")["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.6 * first, (loss.item(), first)
    r = open_loop_errors(m, val)
    assert len(r["pred_l1_per_step"]) == 5
    assert r["pred_l1"] < 0.7 * r["copy_l1"], r
