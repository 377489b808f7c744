"""The quantized checkpoint: packing and the save/load round trip are exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from quantize_builders import tiny_model, token_batch

from carina.workloads.models.quant_layers import (
    attach_quantizers,
    calibrate_clip_values,
    quant_layers,
    set_precision,
)
from carina.workloads.quantize.ptq import quantize_model_weights
from carina.workloads.runtime import packed
from carina.workloads.runtime.storage import open_store

torch.set_num_threads(1)


@pytest.mark.parametrize("width", [1, 2, 31, 64])
def test_int4_packing_round_trips_every_code_exactly(width: int) -> None:
    codes = torch.randint(0, 16, (5, width), generator=torch.Generator().manual_seed(width))
    codes = codes.to(torch.uint8)
    p = packed.pack_int4(codes)
    assert p.dtype == torch.uint8
    assert p.shape == (5, (width + 1) // 2)
    assert torch.equal(packed.unpack_int4(p, width), codes)


def test_packing_puts_the_even_column_in_the_low_nibble() -> None:
    codes = torch.tensor([[0x3, 0xA, 0xF]], dtype=torch.uint8)
    assert packed.pack_int4(codes).tolist() == [[0xA3, 0x0F]]


def test_packing_refuses_codes_wider_than_4_bits() -> None:
    with pytest.raises(ValueError, match=r"codes must be in \[0, 15\]"):
        packed.pack_int4(torch.tensor([[16]], dtype=torch.uint8))


@pytest.mark.parametrize(("bits", "group_size"), [(4, 16), (4, 0), (8, 16)])
def test_quantized_checkpoint_round_trips_exactly(
    tmp_path: Path, bits: int, group_size: int
) -> None:
    model = tiny_model()
    attach_quantizers(model, 4)
    calibrate_clip_values(model, [token_batch()])
    qweights = quantize_model_weights(model, "gptq", bits, group_size, [token_batch()], True)
    set_precision(model, quantize_weights=True, quantize_activations=True)
    clips = {
        n: (m.act_quant.lower.item(), m.act_quant.upper.item())
        for n, m in quant_layers(model).items()
    }
    store = open_store(str(tmp_path))
    packed.save_quantized(
        store,
        model,
        model.arch,
        qweights,
        clips,
        {"weightBits": bits, "activationBits": 4, "groupSize": group_size},
    )

    loaded, loaded_q, manifest = packed.load_quantized(store)
    assert manifest["packing"] == ("int4x2-low-first" if bits <= 4 else "uint8")
    for name, qw in qweights.items():
        assert torch.equal(loaded_q[name].codes, qw.codes)
        assert torch.equal(loaded_q[name].scales, qw.scales)
        assert torch.equal(loaded_q[name].zeros, qw.zeros)
    idx = token_batch(seed=5)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], loaded(idx)[0])


def test_int4_layers_take_under_a_fifth_of_float32() -> None:
    # 16 weights in 8 bytes plus a float16 scale and a uint8 zero point: 11 bytes for 64.
    model = tiny_model()
    attach_quantizers(model, 4)
    qweights = quantize_model_weights(model, "rtn", 4, 16, [], True)
    clips = dict.fromkeys(qweights, (-1.0, 1.0))
    tensors = packed.encode_layers(qweights, clips)
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    full = sum(m.weight.numel() * 4 for m in quant_layers(model).values())
    assert stored < full / 5


def test_a_store_without_a_quantized_checkpoint_is_refused(tmp_path: Path) -> None:
    from carina.workloads.errors import WorkerError

    with pytest.raises(WorkerError):
        packed.load_quantized(open_store(str(tmp_path)))
