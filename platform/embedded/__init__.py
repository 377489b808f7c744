"""The embedded substrate: TrainingJobs as worker processes on this machine, state in SQLite.

`store` keeps jobs, workers, events and metric samples; `launcher` starts and stops worker
processes with the worker contract; `capacity` decides which jobs fit; `substrate` is the
loop that observes workers, calls the shared planning functions and applies their actions.
"""
