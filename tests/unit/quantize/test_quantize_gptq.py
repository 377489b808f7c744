"""GPTQ against round-to-nearest on a layer whose inputs are correlated."""

from __future__ import annotations

import pytest
import torch
from quantize_builders import tiny_model, token_batch

from carina.workloads.models.fake_quant import quantize_weight_rtn
from carina.workloads.models.quant_layers import attach_quantizers, quant_layers
from carina.workloads.quantize.gptq import HessianAccumulator, gptq_quantize, reconstruction_error
from carina.workloads.quantize.ptq import quantize_model_weights

torch.set_num_threads(1)


def correlated_inputs(n: int, dim: int, seed: int) -> torch.Tensor:
    """Inputs driven by a few shared factors plus noise, with uneven channel scales."""
    g = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, dim // 4, generator=g)
    mixing = torch.randn(dim // 4, dim, generator=g)
    scales = torch.logspace(-0.5, 0.5, dim)
    return (factors @ mixing + 0.1 * torch.randn(n, dim, generator=g)) * scales


@pytest.mark.parametrize("group_size", [0, 16])
@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_reconstructs_a_layer_better_than_round_to_nearest(group_size: int, bits: int) -> None:
    dim, out = 64, 48
    w = torch.randn(out, dim, generator=torch.Generator().manual_seed(0)) * 0.2
    x = correlated_inputs(4096, dim, seed=1)
    x_cal, x_test = x[:2048], x[2048:]  # held out: GPTQ must generalize
    acc = HessianAccumulator(dim)
    for chunk in x_cal.split(500):
        acc.add(chunk)
    gptq = gptq_quantize(w, acc.H, bits, group_size).dequantize()
    rtn = quantize_weight_rtn(w, bits, group_size).dequantize()
    assert reconstruction_error(w, gptq, x_test) < 0.7 * reconstruction_error(w, rtn, x_test)


def test_hessian_accumulator_is_2_over_n_xtx_whatever_the_chunking() -> None:
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    acc = HessianAccumulator(8)
    for chunk in (x[:7], x[7:100], x[100:]):
        acc.add(chunk)
    expected = 2.0 / 300 * x.double().T @ x.double()
    assert torch.allclose(acc.H, expected, atol=1e-10)


def test_gptq_codes_stay_on_the_grid_and_ignore_dead_inputs() -> None:
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    x[:, 3] = 0.0  # an input that never fires
    acc = HessianAccumulator(32)
    acc.add(x)
    qw = gptq_quantize(w, acc.H, 4, 8)
    assert int(qw.codes.max()) <= 15
    assert qw.scales.shape == (8, 4)
    assert torch.all(qw.dequantize()[:, 3] == 0)


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_model_weight_ptq_quantizes_every_block_linear(method: str) -> None:
    model = tiny_model()
    attach_quantizers(model, 4)
    qweights = quantize_model_weights(model, method, 4, 16, [token_batch()], True)
    layers = quant_layers(model)
    assert set(qweights) == set(layers)
    for name, layer in layers.items():
        assert layer.weight_q is not None
        assert torch.equal(layer.weight_q, qweights[name].dequantize())


@pytest.mark.parametrize("n_in", [64, 192, 300])
def test_per_channel_gptq_with_an_identity_hessian_equals_round_to_nearest(n_in: int) -> None:
    # Small weights first, large ones past column 128: a grid from the first 128 columns alone
    # would clip the large ones. With H = I no error is spread, so GPTQ is RTN on the row's grid.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, n_in, generator=g) * 0.02
    w[:, min(128, n_in // 2) :] *= 40.0
    qw = gptq_quantize(w, torch.eye(n_in, dtype=torch.float64), 4, 0)
    rtn = quantize_weight_rtn(w, 4, 0)
    assert qw.scales.shape == (16, 1)
    assert torch.equal(qw.scales, rtn.scales)
    assert torch.equal(qw.codes, rtn.codes)
    assert torch.equal(qw.dequantize(), rtn.dequantize())


def test_gptq_calibrates_on_full_precision_weights_after_round_to_nearest() -> None:
    # A model quantized by RTN first must give GPTQ the same codes as a fresh copy: the layers
    # not yet quantized by GPTQ run their floating-point weights, not RTN's.
    fresh, used = tiny_model(), tiny_model()
    used.load_state_dict(fresh.state_dict())
    attach_quantizers(fresh, 4)
    attach_quantizers(used, 4)
    batches = [token_batch()]
    quantize_model_weights(used, "rtn", 4, 0, batches, True)
    after_rtn = quantize_model_weights(used, "gptq", 4, 0, batches, True)
    alone = quantize_model_weights(fresh, "gptq", 4, 0, batches, True)
    for name, qw in alone.items():
        assert torch.equal(after_rtn[name].codes, qw.codes), name
