"""What every training workload shares: the run loop, its checkpoints, setup and teardown."""
