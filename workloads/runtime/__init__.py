"""What every runner shares: the run loop, checkpoints and their storage, distributed setup,
telemetry, precision, FLOPs and learning-rate schedules."""
