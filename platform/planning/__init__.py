"""Pure planning: what a TrainingJob's children look like and what to do next.

Every substrate (the Kubernetes operator, the embedded local substrate) calls these functions
with plain data and applies what they return; nothing here talks to an API, sleeps or reads
the clock.
"""
