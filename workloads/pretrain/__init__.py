"""Pretraining: `run.run_pretrain`, the runner `python -m carina.workloads` dispatches to."""
