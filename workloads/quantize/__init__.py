"""W4A4 quantization (Nrusimha et al. 2024, arXiv 2404.03605; notes/techniques.md §3).

The model-level pieces live in `models/`, since pretraining uses them too (its `qat` option):
`models.fake_quant` (activation quantizer with learned clip values, per-channel/group weight
quantization, the QuantLinear layer), `models.kurtosis` (kurtosis regularization by forward
hooks, activation statistics) and `models.quant_layers` (which layers are quantized; switching
precisions; clip-value calibration). The quantized checkpoint's format (packed int4 codes,
scales, zero points) is `runtime.packed`, since `evaluate` reads what this package writes. Here:

- `qat`: the QAT optimizer and step.
- `gptq`, `ptq`: weight PTQ (round-to-nearest, GPTQ).
- `report`: perplexity at W16A16 / W4A16 / W4A4 and per-layer statistics.
- `metrics`: the workload's Prometheus gauges.
- `workload`: the `quantize` workload, `run_quantize(config, context)`.
"""
