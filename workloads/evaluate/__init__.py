"""The `evaluate` workload and harness: perplexity, multiple choice, refusal, and the report."""
