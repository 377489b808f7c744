"""The model every workload trains or reads (`transformer`), and decoding with it (`generation`).

Fake quantization of its linear layers (`fake_quant`, `quant_layers`) and the kurtosis
regularizer (`kurtosis`) are here too: the `quantize` workload and pretraining's `qat` option
both train with them.
"""
