"""A decoder-only transformer, read top to bottom (nanoGPT style).

Pre-norm blocks of RMSNorm -> attention -> RMSNorm -> SwiGLU (or a DS-MoE mixture), with

- RoPE with a configurable base θ (long-context stages raise θ, Stallone et al. 2024);
- attention with any number of K/V heads: n_kv = n_heads is MHA, 1 is MQA, between is GQA;
- cross-layer attention, CLA (Brandon et al. 2024, arXiv 2405.12981): only the first layer of
  each group of `cla_sharing` adjacent layers projects K/V, the others reuse them, so the
  KV cache holds `ceil(n_layers / cla_sharing)` layers;
- DS-MoE MLPs (Pan, Shen et al. 2024, arXiv 2404.05567): trained densely (every expert runs,
  outputs weighted by the router softmax) with the mutual-information loss, run sparsely at
  inference by a threshold on N·S_i or by top-k;
- µP (CerebrasGPT-style, as in the Power-scheduler paper, Shen et al. 2024, arXiv 2408.13359):
  embedding output × m_emb, residual branches × m_res, hidden init std σ/√m_width, attention
  logits scaled 1/d_head, output logits / m_width, and hidden-matrix learning rate η/m_width
  (`param_groups`); m_emb, m_res and σ are settings of the architecture (paper defaults);
- optionally (`activation_bits` < 16, a model pretrained with W4A4 QAT) every block linear is a
  QuantLinear whose input is fake-quantized with learned clip values (`quant_layers`).

Shapes in comments: B batch, T time, C d_model, H query heads, K K/V heads, D d_head,
E experts, F hidden width, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carina.workloads.config import Architecture
from carina.workloads.models.quant_layers import attach_quantizers

# µP's σ, m_emb and m_res are the architecture's `mup_init_std`, `mup_emb_mult` and
# `mup_res_mult` (defaults: the Power-scheduler paper's setup, Shen et al. 2024, Table 1).
# Standard parametrization (µP off): GPT-2 init.
SP_INIT_STD = 0.02


def width_multiplier(arch: Architecture) -> float:
    """m_width = d_model / d_base (1.0 when µP is off)."""
    return arch.d_model / arch.mup_base_width if arch.mup else 1.0


def owns_kv(layer: int, arch: Architecture) -> bool:
    """Whether `layer` projects its own K/V under CLA.

    Groups of `cla_sharing` adjacent layers share one K/V; when the factor does not divide the
    layer count the remainder forms a shorter first group, so layer 0 always owns a cache.
    """
    first = arch.n_layers % arch.cla_sharing
    return layer == 0 or (layer - first) % arch.cla_sharing == 0


# ---------------------------------------------------------------- building blocks


class RMSNorm(nn.Module):
    """x / rms(x) · g (Zhang & Sennrich 2019); no bias, no mean subtraction."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(d_head: int, max_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin of RoPE's angles, each (max_len, D/2): angle = pos · θ^(-2i/D)."""
    inv_freq = theta ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x_i, x_{i+D/2}) of x (B, T, heads, D) by the angles of its positions."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)  # (T, 1, D/2)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


@dataclass
class KVCache:
    """Preallocated keys and values of one K/V-owning layer: each (B, K, T_max, D)."""

    k: Tensor
    v: Tensor

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, K, T, D) at `start` and return the filled prefix."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class Attention(nn.Module):
    """Causal self-attention with K < H K/V heads (GQA/MQA) and optional CLA sharing."""

    def __init__(self, arch: Architecture, owns_kv: bool) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.d_head = arch.n_heads, arch.n_kv_heads, arch.d_head
        self.owns_kv = owns_kv
        self.wq = nn.Linear(arch.d_model, arch.n_heads * arch.d_head, bias=False)
        if owns_kv:
            self.wk = nn.Linear(arch.d_model, arch.n_kv_heads * arch.d_head, bias=False)
            self.wv = nn.Linear(arch.d_model, arch.n_kv_heads * arch.d_head, bias=False)
        self.wo = nn.Linear(arch.n_heads * arch.d_head, arch.d_model, bias=False)
        # µP: logits q·k/D instead of q·k/√D, because after training q and k are correlated
        # and their dot product grows like D, not √D (Yang et al. 2021, Tensor Programs V).
        self.scale = 1.0 / arch.d_head if arch.mup else 1.0 / math.sqrt(arch.d_head)

    def forward(
        self,
        x: Tensor,  # (B, T, C)
        cos: Tensor,  # (T, D/2) for positions start..start+T
        sin: Tensor,
        shared_kv: tuple[Tensor, Tensor] | None,
        cache: KVCache | None,
        start: int,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.d_head), cos, sin)
        if self.owns_kv:
            k = apply_rope(self.wk(x).view(B, T, self.n_kv, self.d_head), cos, sin)
            v = self.wv(x).view(B, T, self.n_kv, self.d_head)
            k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, K, T, D)
            if cache is not None:
                k, v = cache.update(start, k, v)  # (B, K, start+T, D)
        else:
            # CLA: reuse the K/V (already rotated, already cached) of this group's first layer.
            assert shared_kv is not None, "a CLA layer needs the K/V of its group's first layer"
            k, v = shared_kv
        # A prompt (start = 0) is causal; single decoding steps attend to the whole cache.
        if T > 1 and start != 0:
            raise ValueError("multi-token forward with a cache must start at position 0")
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),  # (B, H, T, D)
            k,
            v,
            is_causal=T > 1,
            scale=self.scale,
            enable_gqa=self.n_kv != self.n_heads,
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.d_head)
        return self.wo(y), (k, v)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) ⊙ w3 x) (Shazeer 2020)."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=False)
        self.w3 = nn.Linear(d_model, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.w2(F.silu(self.w1(x)) * self.w3(x)), None


def mutual_information_loss(scores: Tensor) -> Tensor:
    """DS-MoE's L_MI = -H(e) + mean_x H(e|x), with p(e) the batch-mean router distribution.

    Minimizing it spreads load over experts (high H(e)) while making each token's choice sharp
    (low H(e|x)), which is what lets inference drop the experts a token barely uses.
    scores: (N, E) router probabilities.
    """
    eps = 1e-9
    p = scores.mean(dim=0)  # (E,)
    h_marginal = -(p * (p + eps).log()).sum()
    h_conditional = -(scores * (scores + eps).log()).sum(dim=-1).mean()
    return -h_marginal + h_conditional


@dataclass(frozen=True)
class Sparsity:
    """How a DS-MoE layer runs at inference: keep experts with E·S_i > threshold, or top-k."""

    threshold: float | None = None
    top_k: int | None = None


class MoE(nn.Module):
    """A DS-MoE mixture of SwiGLU experts: dense in training, sparse at inference if asked."""

    def __init__(self, d_model: int, hidden: int, n_experts: int) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.w3 = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, d_model))
        self.sparsity: Sparsity | None = None
        # Running count of (token, expert) pairs computed in sparse mode, for active fractions.
        self.kept_pairs = 0
        self.total_pairs = 0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        B, T, C = x.shape
        xf = x.reshape(B * T, C)  # (N, C)
        scores = F.softmax(self.router(xf).float(), dim=-1)  # (N, E)
        aux = mutual_information_loss(scores)
        if self.sparsity is None:
            h = F.silu(torch.einsum("nc,ecf->enf", xf, self.w1)) * torch.einsum(
                "nc,ecf->enf", xf, self.w3
            )  # (E, N, F)
            y = torch.einsum("enf,efc->enc", h, self.w2)  # (E, N, C)
            out = torch.einsum("ne,enc->nc", scores.to(y.dtype), y)
        else:
            out = self._sparse(xf, scores)
        return out.view(B, T, C), aux

    def _sparse(self, xf: Tensor, scores: Tensor) -> Tensor:
        """Compute only the kept experts of each token; the kept weights are not renormalized."""
        keep = self.keep_mask(scores)  # (N, E)
        self.kept_pairs += int(keep.sum())
        self.total_pairs += keep.numel()
        out = torch.zeros_like(xf)
        for e in range(self.n_experts):
            rows = keep[:, e].nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            xe = xf[rows]  # (n_e, C)
            ye = (F.silu(xe @ self.w1[e]) * (xe @ self.w3[e])) @ self.w2[e]
            out.index_add_(0, rows, ye * scores[rows, e, None].to(ye.dtype))
        return out

    def keep_mask(self, scores: Tensor) -> Tensor:
        """(N, E) booleans: which experts each token runs under the current sparsity."""
        assert self.sparsity is not None
        if self.sparsity.top_k is not None:
            idx = scores.topk(min(self.sparsity.top_k, self.n_experts), dim=-1).indices
            return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)
        threshold = self.sparsity.threshold or 0.0
        return self.n_experts * scores > threshold


class Block(nn.Module):
    """One pre-norm transformer layer; residual branches scaled by m_res under µP."""

    def __init__(self, arch: Architecture, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(arch.d_model)
        self.attn = Attention(arch, owns_kv(layer, arch))
        self.mlp_norm = RMSNorm(arch.d_model)
        is_moe = arch.moe_experts > 0 and layer % arch.moe_every == 0
        # Each expert is ffn_hidden / E wide, so a mixture has the dense MLP's parameters and
        # FLOPs when trained densely, and a fraction of them when run sparsely.
        self.mlp: SwiGLU | MoE = (
            MoE(arch.d_model, max(8, arch.ffn_hidden // arch.moe_experts), arch.moe_experts)
            if is_moe
            else SwiGLU(arch.d_model, arch.ffn_hidden)
        )
        self.res_mult = arch.mup_res_mult if arch.mup else 1.0

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        shared_kv: tuple[Tensor, Tensor] | None,
        cache: KVCache | None,
        start: int,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor | None]:
        a, kv = self.attn(self.attn_norm(x), cos, sin, shared_kv, cache, start)
        x = x + self.res_mult * a
        m, aux = self.mlp(self.mlp_norm(x))
        return x + self.res_mult * m, kv, aux


# ---------------------------------------------------------------- the model


def _clip_values_optional(_model: nn.Module, keys: Any) -> None:
    """Let weights with or without activation clip values load into a model with or without
    quantizers: a plain checkpoint can start QAT, and a QAT one can be read as a plain model."""
    for found in (keys.missing_keys, keys.unexpected_keys):
        for k in [k for k in found if ".act_quant." in k]:
            found.remove(k)


class Transformer(nn.Module):
    """The decoder LM. `forward(idx, targets)` returns (logits, loss incl. α·L_MI)."""

    rope_cos: Tensor
    rope_sin: Tensor

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.m_width = width_multiplier(arch)
        self.emb_mult = arch.mup_emb_mult if arch.mup else 1.0
        self.tok_emb = nn.Embedding(arch.vocab_size, arch.d_model)
        self.blocks = nn.ModuleList(Block(arch, i) for i in range(arch.n_layers))
        self.norm = RMSNorm(arch.d_model)
        self.lm_head = nn.Linear(arch.d_model, arch.vocab_size, bias=False)
        if arch.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rope_tables(arch.d_head, arch.max_seq_len, arch.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (T_max, D/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()
        if arch.activation_bits < 16:  # after the init: clip values are not weights
            attach_quantizers(self, arch.activation_bits)
        self.register_load_state_dict_post_hook(_clip_values_optional)

    def set_rope(self, theta: float, max_len: int | None = None) -> None:
        """Rebuild the rotary tables for base θ and positions up to `max_len` (default: as now).

        Long-context continual pretraining raises θ with the sequence length on the same
        weights (Stallone et al. 2024: θ = 100K at 8K up to 10M at 128K); an evaluation past
        the trained length extends the tables. The tables are no weights: `arch` records θ so
        a checkpoint reloads with the θ it was trained with last.
        """
        length = max_len or self.rope_cos.shape[0]
        cos, sin = rope_tables(self.arch.d_head, length, theta)
        device = self.rope_cos.device
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)  # (T_max, D/2)
        self.arch = dataclasses.replace(self.arch, rope_theta=theta)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """µP init: hidden std σ/√m_width, output projections /√(2·L·m_width); SP: GPT-2's."""
        arch = self.arch
        sigma = arch.mup_init_std if arch.mup else SP_INIT_STD
        hidden_std = sigma / math.sqrt(self.m_width)
        out_std = sigma / math.sqrt(2 * arch.n_layers * self.m_width)
        for name, p in self.named_parameters():
            if ".act_quant." in name:  # clip values: calibrated, not initialized
                continue
            if p.ndim == 1:  # norm gains
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight")) or name.endswith(".w2"):
                nn.init.normal_(p, std=out_std)
            elif name in ("tok_emb.weight", "lm_head.weight"):
                nn.init.normal_(p, std=sigma)
            else:
                nn.init.normal_(p, std=hidden_std)

    def forward(
        self,
        idx: Tensor,  # (B, T) token ids
        targets: Tensor | None = None,  # (B, T) next-token ids
        caches: list[KVCache] | None = None,
        start: int = 0,
    ) -> tuple[Tensor, Tensor | None]:
        T = idx.shape[1]
        cos = self.rope_cos[start : start + T]
        sin = self.rope_sin[start : start + T]
        x = self.tok_emb(idx) * self.emb_mult  # (B, T, C)
        kv: tuple[Tensor, Tensor] | None = None
        aux_losses: list[Tensor] = []
        cache_iter = iter(caches) if caches is not None else None
        for block in cast(list[Block], self.blocks):
            cache = next(cache_iter) if cache_iter is not None and block.attn.owns_kv else None
            x, kv, aux = block(x, cos, sin, kv, cache, start)
            if aux is not None:
                aux_losses.append(aux)
        # µP: logits / m_width keep the output layer's update Θ(1) as the width grows.
        logits = self.lm_head(self.norm(x)) / self.m_width  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        if aux_losses and self.training:
            loss = loss + self.arch.moe_mi_alpha * torch.stack(aux_losses).mean()
        return logits, loss

    # ------------------------------------------------------------ inference

    def init_caches(
        self, batch: int, max_len: int, dtype: torch.dtype | None = None
    ) -> list[KVCache]:
        """One preallocated KV cache per K/V-owning layer (fewer under CLA)."""
        arch, p = self.arch, self.lm_head.weight
        shape = (batch, arch.n_kv_heads, max_len, arch.d_head)
        return [
            KVCache(
                torch.zeros(shape, dtype=dtype or p.dtype, device=p.device),
                torch.zeros(shape, dtype=dtype or p.dtype, device=p.device),
            )
            for b in cast(list[Block], self.blocks)
            if b.attn.owns_kv
        ]

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,  # (B, T0) prompt
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue `idx` with a KV cache: greedy when temperature is 0, else sampled.

        Returns (B, T0 + n) with n <= max_new_tokens; rows that produced `eos_id` are padded
        with it until every row has finished.
        """
        was_training = self.training
        self.eval()
        B, T0 = idx.shape
        total = min(T0 + max_new_tokens, self.arch.max_seq_len)
        caches = self.init_caches(B, total)
        logits, _ = self(idx, caches=caches, start=0)
        out = [idx]
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        for pos in range(T0, total):
            nxt = self._pick(logits[:, -1].float(), temperature, top_k, generator)  # (B,)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out.append(nxt[:, None])
            if (eos_id is not None and bool(done.all())) or pos + 1 >= total:
                break
            logits, _ = self(nxt[:, None], caches=caches, start=pos)
        self.train(was_training)
        return torch.cat(out, dim=1)

    @staticmethod
    def _pick(
        logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
    ) -> Tensor:
        if temperature <= 0:
            return logits.argmax(dim=-1)
        logits = logits / temperature
        if top_k is not None:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = F.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def set_moe_sparsity(self, sparsity: Sparsity | None) -> None:
        """Run every DS-MoE layer densely (None) or sparsely; resets the active-pair counts."""
        for m in self.modules():
            if isinstance(m, MoE):
                m.sparsity = sparsity
                m.kept_pairs = m.total_pairs = 0

    def expert_active_fraction(self) -> float:
        """Share of (token, expert) pairs computed since sparsity was last set (1.0 if none)."""
        moes = [m for m in self.modules() if isinstance(m, MoE) and m.total_pairs]
        if not moes:
            return 1.0
        return sum(m.kept_pairs for m in moes) / sum(m.total_pairs for m in moes)

    def num_params(self, exclude_embedding: bool = False) -> int:
        """Parameter count (tied weights once); optionally without the token embedding."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embedding:
            n -= self.tok_emb.weight.numel()
            if self.arch.tie_embeddings:  # the tied matrix still does the output matmul
                n += self.lm_head.weight.numel()
        return n


def param_groups(model: Transformer, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: µP hidden matrices get lr × 1/m_width; norms get no decay.

    Each group carries `lr_scale`; the training loop sets `lr = schedule_lr · lr_scale`.
    Hidden matrices are every ≥2-D weight except the embedding and the output head, whose
    fan-in does not grow with width in the way µP's 1/fan_in Adam rule covers.
    """
    m_width = model.m_width
    hidden, vector_like, no_decay = [], [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim < 2:
            no_decay.append(p)
        elif name in ("tok_emb.weight", "lm_head.weight"):
            vector_like.append(p)
        else:
            hidden.append(p)
    groups = [
        {
            "name": "hidden",
            "params": hidden,
            "lr_scale": 1.0 / m_width,
            "weight_decay": weight_decay,
        },
        {"name": "embedding", "params": vector_like, "lr_scale": 1.0, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "lr_scale": 1.0, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
