"""Log-likelihood scoring matches a direct computation, whatever the batch's padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from carina.workloads.config import ModelSpec
from carina.workloads.data import ByteTokenizer
from carina.workloads.evaluate.scoring import continuation_logprobs, text_nll
from carina.workloads.models.transformer import Transformer

TOK = ByteTokenizer()


def tiny() -> Transformer:
    torch.manual_seed(0)
    return Transformer(
        ModelSpec(preset="tiny", d_model=32, n_layers=1, n_heads=2, n_kv_heads=2).resolve()
    )


@torch.no_grad()
def direct(model: Transformer, context: str, continuation: str) -> float:
    ids = torch.tensor([TOK.encode(context + continuation)])
    logp = F.log_softmax(model(ids[:, :-1])[0][0].float(), dim=-1)
    n = len(TOK.encode(context))
    return float(sum(logp[t - 1, ids[0, t]] for t in range(n, ids.shape[1])))


def test_continuation_logprob_equals_the_direct_sum_in_a_padded_batch():
    model = tiny()
    pairs = [("Question: 2+3?\nAnswer:", " 5"), ("Q:", " a much longer continuation")]
    scored = continuation_logprobs(model, TOK, pairs, batch_size=2)
    for (ctx, cont), (lp, n) in zip(pairs, scored, strict=True):
        assert n == len(cont)
        assert abs(lp - direct(model, ctx, cont)) < 1e-4


def test_text_nll_counts_whole_windows():
    model = tiny()
    total, tokens = text_nll(model, TOK, ["x" * 1000], max_windows=2)
    assert tokens == 2 * model.arch.max_seq_len
    assert total > 0
