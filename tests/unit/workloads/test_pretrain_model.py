"""The model's exact equivalences: CLA, GQA, DS-MoE sparse inference, the KV-cache path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from carina.workloads.config import ModelSpec, MoeSpec
from carina.workloads.models.transformer import Sparsity, Transformer, owns_kv, rope_tables

torch.set_num_threads(1)


def make_model(seed: int = 0, **overrides: object) -> Transformer:
    spec = {"preset": "tiny", "d_model": 64, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4}
    spec.update(overrides)
    torch.manual_seed(seed)
    return Transformer(ModelSpec(**spec).resolve()).eval()


def tokens(batch: int = 2, length: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def textbook_forward(model: Transformer, idx: torch.Tensor) -> torch.Tensor:
    """Logits from explicit matmuls and a masked softmax, K/V heads repeated per group.

    A layer without its own K/V projection (CLA) uses the K/V its predecessor used.
    """
    arch = model.arch
    B, T = idx.shape
    H, K, D = arch.n_heads, arch.n_kv_heads, arch.d_head
    cos, sin = rope_tables(D, T, arch.rope_theta)

    def norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def rope(x: torch.Tensor) -> torch.Tensor:  # (B, T, heads, D), pairs (i, i + D/2)
        out = x.clone()
        for i in range(D // 2):
            a, b = x[..., i], x[..., i + D // 2]
            c, s = cos[:, i][None, :, None], sin[:, i][None, :, None]
            out[..., i], out[..., i + D // 2] = a * c - b * s, b * c + a * s
        return out

    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    x = model.tok_emb.weight[idx] * model.emb_mult
    k = v = None
    for block in model.blocks:
        attn = block.attn
        h = norm(x, block.attn_norm.weight)
        q = rope((h @ attn.wq.weight.T).view(B, T, H, D))
        if attn.owns_kv:
            k = rope((h @ attn.wk.weight.T).view(B, T, K, D)).repeat_interleave(H // K, dim=2)
            v = (h @ attn.wv.weight.T).view(B, T, K, D).repeat_interleave(H // K, dim=2)
        scores = torch.einsum("bthd,bshd->bhts", q, k) * attn.scale
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        y = torch.einsum("bhts,bshd->bthd", probs, v).reshape(B, T, H * D)
        x = x + block.res_mult * (y @ attn.wo.weight.T)
        h = norm(x, block.mlp_norm.weight)
        mlp = block.mlp
        ff = (F.silu(h @ mlp.w1.weight.T) * (h @ mlp.w3.weight.T)) @ mlp.w2.weight.T
        x = x + block.res_mult * ff
    return (norm(x, model.norm.weight) @ model.lm_head.weight.T) / model.m_width


# ---------------------------------------------------------------- CLA


def test_cla_factor_2_halves_kv_cache_bytes_exactly() -> None:
    for n_kv in (1, 2, 4):
        plain, cla2 = make_model(n_kv_heads=n_kv), make_model(n_kv_heads=n_kv, cla_sharing=2)
        t = 32
        bytes_plain = sum(c.nbytes for c in plain.init_caches(1, t))
        bytes_cla2 = sum(c.nbytes for c in cla2.init_caches(1, t))
        assert bytes_cla2 * 2 == bytes_plain
        assert bytes_plain // t == plain.arch.kv_cache_bytes_per_token(4)  # fp32 cache
        assert bytes_cla2 // t == cla2.arch.kv_cache_bytes_per_token(4)


def test_cla_cache_bytes_match_the_paper_for_h128_mqa_20_layers() -> None:
    # Brandon et al. 2024: H128-MQA, 20 layers, bf16: 10,240 bytes/token; MQA-CLA2: 5,120.
    spec = {"d_model": 2048, "n_heads": 16, "n_kv_heads": 1, "n_layers": 20}
    assert ModelSpec(**spec).resolve().kv_cache_bytes_per_token(2) == 10_240
    assert ModelSpec(**spec, cla_sharing=2).resolve().kv_cache_bytes_per_token(2) == 5_120


def test_cla_groups_put_the_remainder_first_so_layer_0_owns_a_cache() -> None:
    arch = ModelSpec(n_layers=5, cla_sharing=2).resolve()
    assert [owns_kv(i, arch) for i in range(5)] == [True, True, False, True, False]
    assert arch.kv_layers == 3


def test_cla_factor_1_equals_standard_attention() -> None:
    model = make_model(cla_sharing=1)
    assert all(b.attn.owns_kv for b in model.blocks)
    idx = tokens()
    with torch.no_grad():
        logits, _ = model(idx)
        torch.testing.assert_close(logits, textbook_forward(model, idx), rtol=1e-4, atol=1e-5)


def test_cla_factor_2_reuses_the_previous_layers_kv() -> None:
    model = make_model(cla_sharing=2)
    assert [b.attn.owns_kv for b in model.blocks] == [True, False, True, False]
    idx = tokens()
    with torch.no_grad():
        logits, _ = model(idx)
        torch.testing.assert_close(logits, textbook_forward(model, idx), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- GQA / MQA


def test_gqa_with_as_many_kv_heads_as_query_heads_equals_mha() -> None:
    model = make_model(n_kv_heads=4, mup=False)
    idx = tokens()
    with torch.no_grad():
        logits, _ = model(idx)
        torch.testing.assert_close(logits, textbook_forward(model, idx), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_kv", [1, 2])
def test_gqa_equals_mha_whose_kv_heads_are_copied_per_group(n_kv: int) -> None:
    gqa, mha = make_model(n_kv_heads=n_kv), make_model(n_kv_heads=4)
    state = gqa.state_dict()
    D, group = gqa.arch.d_head, 4 // n_kv
    for key, value in list(state.items()):
        if key.endswith(("attn.wk.weight", "attn.wv.weight")):
            state[key] = value.view(n_kv, D, -1).repeat_interleave(group, dim=0).reshape(4 * D, -1)
    mha.load_state_dict(state)
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx)[0], mha(idx)[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- DS-MoE


def moe_model() -> Transformer:
    return make_model(moe=MoeSpec(experts=4, every=1, mi_alpha=4e-4))


@pytest.mark.parametrize("sparsity", [Sparsity(threshold=0.0), Sparsity(top_k=4)])
def test_ds_moe_sparse_inference_with_every_expert_kept_equals_dense(sparsity: Sparsity) -> None:
    model, idx = moe_model(), tokens()
    with torch.no_grad():
        dense, _ = model(idx)
        model.set_moe_sparsity(sparsity)
        sparse, _ = model(idx)
    assert model.expert_active_fraction() == 1.0
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-5)


def test_ds_moe_threshold_drops_experts_and_top_1_keeps_one_per_token() -> None:
    model, idx = moe_model(), tokens()
    with torch.no_grad():
        model.set_moe_sparsity(Sparsity(top_k=1))
        model(idx)
        assert model.expert_active_fraction() == pytest.approx(0.25)
        model.set_moe_sparsity(Sparsity(threshold=1.0))  # keep experts above uniform share
        model(idx)
        assert 0.0 < model.expert_active_fraction() < 1.0


def test_ds_moe_training_loss_adds_the_mutual_information_term() -> None:
    model, idx = moe_model(), tokens()
    targets = torch.roll(idx, -1, dims=1)
    with torch.no_grad():
        model.eval()
        _, eval_loss = model(idx, targets)
        model.train()
        _, train_loss = model(idx, targets)
    assert eval_loss is not None
    assert train_loss is not None
    # L_MI = -H(e) + H(e|x) lies in [-log E, log E]; α = 4e-4 keeps the shift that small.
    assert abs(float(train_loss - eval_loss)) <= 4e-4 * math.log(4) + 1e-6
    assert float(train_loss) != float(eval_loss)


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 1, "cla_sharing": 2}])
def test_greedy_generation_with_kv_cache_equals_recomputing_every_prefix(overrides: dict) -> None:
    model = make_model(**overrides)
    prompt = tokens(batch=2, length=5)
    out = model.generate(prompt, max_new_tokens=8)
    expected = prompt
    with torch.no_grad():
        for _ in range(8):
            logits, _ = model(expected)
            expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, expected)


def test_sampled_generation_is_reproducible_with_a_seeded_generator() -> None:
    model, prompt = make_model(), tokens(batch=1, length=4)
    a = model.generate(
        prompt, 10, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(3)
    )
    b = model.generate(
        prompt, 10, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a, b)
    assert a.shape == (1, 14)


def test_generation_stops_when_every_row_has_emitted_eos() -> None:
    model, prompt = make_model(), tokens(batch=1, length=4)
    first = int(model.generate(prompt, 1)[0, -1])
    out = model.generate(prompt, 10, eos_id=first)
    assert out.shape == (1, 5)
