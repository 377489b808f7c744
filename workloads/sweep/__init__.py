"""The `sweep` workload: learning-rate transfer sweeps on Ray Tune (`run.run_sweep`)."""
