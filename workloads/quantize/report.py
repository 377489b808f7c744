"""The evaluation report: perplexity at W16A16, W{b}A16 and W{b}A{a}, and activation statistics.

Gaps are given twice: against the run's own W16A16 (the QAT weights with activations left in
floating point, which a model trained under clipping need not be good at) and against the base
checkpoint's W16A16, the unquantized, unregularized model: the paper's comparison.

Quantization is simulated on any device (fake quantization: dequantized weights, activations
rounded to their grid), so a CPU gives the same figures as integer kernels would, up to float
accumulation order. Written as JSON (`report.json`, for machines) and Markdown (`report.md`,
for people) next to the quantized checkpoint.

report.json: {"method", "base", "weightBits", "activationBits", "groupSize", "weightPtq",
"qatSteps", "evalTokens", "perplexity": {"w16a16", "w<b>a16", "w<b>a<a>"}, "gap": {same keys
but w16a16: perplexity minus W16A16's}, "basePerplexity" (the base checkpoint at W16A16),
"gapToBase": {every key: perplexity minus basePerplexity}, "meanActivationKurtosis": {"input",
"output"}, "meanWeightKurtosis", "layers": {<name>: {"inputKurtosis", "outputKurtosis",
"inputMaxMedianRatio", "outputMaxMedianRatio", "weightKurtosis"}}}
Activation statistics are measured in the W16A16 pass (floating-point activations).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from carina.workloads.data import Windows
from carina.workloads.models.kurtosis import ActivationStats, weight_kurtosis
from carina.workloads.models.quant_layers import quant_layers, set_precision


def precision_keys(weight_bits: int, activation_bits: int) -> tuple[str, str, str]:
    """("w16a16", "w4a16", "w4a4") for 4-bit weights and activations."""
    a = min(activation_bits, 16)
    return "w16a16", f"w{weight_bits}a16", f"w{weight_bits}a{a}"


@torch.no_grad()
def perplexity(
    model: nn.Module, windows: Windows, n_sequences: int, batch_size: int, device: torch.device
) -> tuple[float, int]:
    """exp(mean token cross-entropy) over the first `n_sequences` windows; and the token count."""
    was_training = model.training
    model.eval()
    n = min(n_sequences, len(windows))
    total, tokens = 0.0, 0
    for first in range(0, n, batch_size):
        idx = list(range(first, min(first + batch_size, n)))
        x, y = windows.batch(idx)
        _, loss = model(x.to(device), y.to(device))
        assert loss is not None
        total += float(loss) * y.numel()
        tokens += y.numel()
    model.train(was_training)
    return math.exp(total / max(tokens, 1)), tokens


def evaluate_precisions(
    model: nn.Module,
    windows: Windows,
    n_sequences: int,
    batch_size: int,
    device: torch.device,
    weight_bits: int,
    activation_bits: int,
) -> tuple[dict[str, float], dict[str, dict[str, float]], int]:
    """Perplexity in the three precisions (weights must be quantized already) and stats.

    Leaves the model at W{b}A{a}.
    """
    k16, kw, kwa = precision_keys(weight_bits, activation_bits)
    layers = quant_layers(model)
    stats = ActivationStats(layers)
    set_precision(model, quantize_weights=False, quantize_activations=False)
    with stats.recording():
        ppl16, tokens = perplexity(model, windows, n_sequences, batch_size, device)
    set_precision(model, quantize_weights=True, quantize_activations=False)
    ppl_w, _ = perplexity(model, windows, n_sequences, batch_size, device)
    set_precision(model, quantize_weights=True, quantize_activations=True)
    ppl_wa, _ = perplexity(model, windows, n_sequences, batch_size, device)
    summary = stats.summary()
    for name, layer in layers.items():
        if name in summary:
            summary[name]["weightKurtosis"] = weight_kurtosis(layer.weight)
    return {k16: ppl16, kw: ppl_w, kwa: ppl_wa}, summary, tokens


def build_report(
    perplexities: dict[str, float],
    layers: dict[str, dict[str, float]],
    meta: dict[str, Any],
    eval_tokens: int,
    base_perplexity: float | None = None,
) -> dict[str, Any]:
    """The report document (see the module docstring).

    `base_perplexity` is the base checkpoint's W16A16 (None: the run's own W16A16, as for PTQ,
    whose W16A16 is the base itself).
    """
    base = perplexities["w16a16"]
    reference = base if base_perplexity is None else base_perplexity

    def mean(key: str) -> float:
        values = [v[key] for v in layers.values()]
        return sum(values) / len(values) if values else float("nan")

    return {
        **meta,
        "evalTokens": eval_tokens,
        "perplexity": perplexities,
        "gap": {k: v - base for k, v in perplexities.items() if k != "w16a16"},
        "basePerplexity": reference,
        "gapToBase": {k: v - reference for k, v in perplexities.items()},
        "meanActivationKurtosis": {
            "input": mean("inputKurtosis"),
            "output": mean("outputKurtosis"),
        },
        "meanWeightKurtosis": mean("weightKurtosis"),
        "layers": layers,
    }


def render_markdown(report: dict[str, Any]) -> str:
    """The report for people: a perplexity table and a per-layer statistics table."""
    lines = [
        f"# Quantization report: {report.get('method', '?')}",
        "",
        f"Base `{report.get('base', '?')}`; weights {report['weightBits']}-bit "
        f"({report['weightPtq']}, group {report['groupSize']}), activations "
        f"{report['activationBits']}-bit; QAT steps {report['qatSteps']}; "
        f"{report['evalTokens']} held-out tokens.",
        "",
        "| precision | perplexity | gap to own W16A16 | gap to base W16A16 |",
        "|---|---:|---:|---:|",
        f"| base W16A16 | {report['basePerplexity']:.3f} | | |",
    ]
    for key, ppl in report["perplexity"].items():
        gap = report["gap"].get(key)
        to_base = report["gapToBase"][key]
        lines.append(
            f"| {key.upper()} | {ppl:.3f} | {'' if gap is None else f'{gap:+.3f}'} | "
            f"{to_base:+.3f} |"
        )
    mk = report["meanActivationKurtosis"]
    lines += [
        "",
        f"Mean activation kurtosis: inputs {mk['input']:.2f}, outputs {mk['output']:.2f}; "
        f"mean weight kurtosis {report['meanWeightKurtosis']:.2f} (a Gaussian has 3).",
        "",
        "| layer | input kurtosis | output kurtosis | input max/median | output max/median "
        "| weight kurtosis |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in report["layers"].items():
        lines.append(
            f"| {name} | {s['inputKurtosis']:.2f} | {s['outputKurtosis']:.2f} | "
            f"{s['inputMaxMedianRatio']:.1f} | {s['outputMaxMedianRatio']:.1f} | "
            f"{s['weightKurtosis']:.2f} |"
        )
    return "\n".join(lines) + "\n"
