"""The quantized checkpoint: packed integer weights, scales, zero points, activation clip values.

The `quantize` workload writes it and `evaluate` reads it, so it lives here, below both.
Layout (a directory under the quantize job's checkpoint URI, any store of `runtime.storage`):

    quantized/
        model.safetensors   tensors below
        manifest.json       written LAST (its presence marks the checkpoint complete)
        report.json, report.md   the quantize job's report (`quantize/report.py`)

`<checkpoint URI>/quantized` is the URI of the result: the quantize job's final checkpoint in
its termination message (so `job://<quantize job>` resolves to it), and the URI
`find_quantized` recognizes.

model.safetensors, for each quantized linear layer `<name>` (weight W of shape (O, I), groups of
g input columns, G = ceil(I / g) groups per row, b weight bits):

    <name>.qweight   uint8 (O, ceil(I/2))  b <= 4: two codes per byte, column 2k in the low
                                           nibble and column 2k+1 in the high nibble (an odd
                                           last column leaves the high nibble 0)
                     uint8 (O, I)          b > 4: one code per byte
    <name>.scales    float16 (O, G)        s
    <name>.zeros     uint8 (O, G)          z, in [0, 2^b - 1]
    <name>.act_clip  float32 (2,)          [lower, upper] of the input's activation quantizer

and every other tensor of the model (embedding, norms, output head) in float32 under its usual
state-dict name; a tied output head is stored once (`aliases` in the manifest). Weights
dequantize as W[o, i] = (q[o, i] - z[o, i // g]) · s[o, i // g]; activations quantize per tensor
with n = 2^a - 1 levels between the clip values (`fake_quant.py`).

manifest.json: {"format": "carina-quantized", "version": 1, "weightBits", "activationBits",
"groupSize" (as configured; per layer in "layers"), "packing": "int4x2-low-first" | "uint8",
"method", "weightPtq", "base", "architecture", "aliases", "layers": {<name>: {"shape": [O, I],
"groupSize": g}}}. Loading rebuilds a Transformer whose quantized layers run on the
dequantized weights: the round trip is exact (codes, float16 scales and zero points are stored
as they were used).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from carina.workloads.config import Architecture, ExitCode
from carina.workloads.errors import WorkerError
from carina.workloads.models.fake_quant import QuantizedWeight
from carina.workloads.models.quant_layers import (
    attach_quantizers,
    set_precision,
    set_quantized_weights,
)
from carina.workloads.runtime.storage import Store, open_store, scratch_dir

FORMAT = "carina-quantized"
VERSION = 1
DIRECTORY = "quantized"
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"


def pack_int4(codes: Tensor) -> Tensor:
    """(O, I) codes in [0, 15] -> (O, ceil(I/2)) bytes, even column in the low nibble."""
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError("pack_int4: codes must be in [0, 15]")
    c = codes.to(torch.uint8)
    if c.shape[1] % 2:
        c = torch.cat([c, torch.zeros_like(c[:, :1])], dim=1)
    return c[:, 0::2] | (c[:, 1::2] << 4)


def unpack_int4(packed: Tensor, in_features: int) -> Tensor:
    """Inverse of `pack_int4`: (O, ceil(I/2)) bytes -> (O, I) codes."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=2).reshape(packed.shape[0], -1)[:, :in_features]


def encode_layers(
    qweights: dict[str, QuantizedWeight], clips: dict[str, tuple[float, float]]
) -> dict[str, Tensor]:
    """The safetensors entries of the quantized layers."""
    out: dict[str, Tensor] = {}
    for name, qw in qweights.items():
        out[f"{name}.qweight"] = pack_int4(qw.codes) if qw.bits <= 4 else qw.codes.contiguous()
        out[f"{name}.scales"] = qw.scales.contiguous()
        out[f"{name}.zeros"] = qw.zeros.contiguous()
        out[f"{name}.act_clip"] = torch.tensor(clips[name], dtype=torch.float32)
    return out


def decode_layer(
    tensors: dict[str, Tensor], name: str, shape: tuple[int, int], bits: int, group_size: int
) -> QuantizedWeight:
    """One layer's QuantizedWeight back from its safetensors entries."""
    raw = tensors[f"{name}.qweight"]
    codes = unpack_int4(raw, shape[1]) if bits <= 4 else raw
    return QuantizedWeight(
        codes=codes,
        scales=tensors[f"{name}.scales"],
        zeros=tensors[f"{name}.zeros"],
        bits=bits,
        group_size=group_size,
    )


def save_quantized(
    store: Store,
    model: nn.Module,
    architecture: Architecture,
    qweights: dict[str, QuantizedWeight],
    clips: dict[str, tuple[float, float]],
    meta: dict[str, Any],
) -> str:
    """Write `quantized/` (manifest last); returns its URI."""
    quantized = set(qweights)
    rest: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[int, str] = {}
    for key, t in model.state_dict().items():
        layer = key.rsplit(".", 1)[0]
        if layer in quantized or layer.endswith(".act_quant"):
            continue
        if t.data_ptr() in seen:
            aliases[key] = seen[t.data_ptr()]
            continue
        seen[t.data_ptr()] = key
        rest[key] = t.detach().float().contiguous().cpu()
    tensors = {**rest, **encode_layers(qweights, clips)}
    bits = {qw.bits for qw in qweights.values()}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "packing": "int4x2-low-first" if max(bits, default=4) <= 4 else "uint8",
        "architecture": dataclasses.asdict(architecture),
        "aliases": aliases,
        "layers": {
            n: {"shape": list(qw.codes.shape), "groupSize": qw.group_size, "bits": qw.bits}
            for n, qw in qweights.items()
        },
        "files": [MODEL_FILE],
    }
    staging = scratch_dir()
    try:
        save_file(tensors, str(staging / MODEL_FILE), metadata={"format": FORMAT})
        store.put_file(staging / MODEL_FILE, f"{DIRECTORY}/{MODEL_FILE}")
        store.put_bytes(json.dumps(manifest, indent=1).encode(), f"{DIRECTORY}/{MANIFEST}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return store.uri.rstrip("/") + "/" + DIRECTORY


def read_manifest(store: Store) -> dict[str, Any] | None:
    """The manifest of a complete quantized checkpoint under `store`, or None."""
    raw = store.get_bytes(f"{DIRECTORY}/{MANIFEST}")
    return None if raw is None else dict(json.loads(raw))


def find_quantized(uri: str) -> Store | None:
    """The checkpoint root whose complete quantized checkpoint `uri` names, or None.

    A quantized checkpoint is named by its directory, `<root>/quantized` (a quantize job's
    final checkpoint); any other URI (a `step-N` directory, a checkpoint root) gives None.
    """
    root, _, last = uri.rstrip("/").rpartition("/")
    if last != DIRECTORY or not root:
        return None
    store = open_store(root)
    return store if read_manifest(store) is not None else None


def precision(manifest: dict[str, Any]) -> str:
    """The precision a quantized checkpoint runs at, as reports name it: `W4A4`."""
    return f"W{manifest['weightBits']}A{manifest['activationBits']}"


def load_quantized(store: Store) -> tuple[nn.Module, dict[str, QuantizedWeight], dict[str, Any]]:
    """A Transformer running the stored quantized weights and clip values (W·A· as stored)."""
    from carina.workloads.models.transformer import Transformer

    manifest = read_manifest(store)
    if manifest is None or manifest.get("format") != FORMAT:
        raise WorkerError(ExitCode.NO_INPUT, f"{store.uri}: no quantized checkpoint")
    scratch = scratch_dir()
    try:
        tensors = load_file(str(store.get_file(f"{DIRECTORY}/{MODEL_FILE}", scratch)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model = Transformer(Architecture(**manifest["architecture"]))
    attach_quantizers(model, int(manifest["activationBits"]))
    qweights = {
        name: decode_layer(tensors, name, tuple(info["shape"]), info["bits"], info["groupSize"])
        for name, info in manifest["layers"].items()
    }
    state = {k: v for k, v in tensors.items() if k.rpartition(".")[0] not in qweights}
    for alias, target in manifest["aliases"].items():
        state[alias] = state[target]
    for name, qw in qweights.items():
        state[f"{name}.weight"] = qw.dequantize(torch.float32)
        lo, hi = tensors[f"{name}.act_clip"].tolist()
        state[f"{name}.act_quant.lower"] = torch.tensor(lo)
        state[f"{name}.act_quant.upper"] = torch.tensor(hi)
    model.load_state_dict(state)
    set_quantized_weights(model, qweights)
    set_precision(model, quantize_weights=True, quantize_activations=True)
    return model, qweights, manifest
