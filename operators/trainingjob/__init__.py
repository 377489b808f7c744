"""The TrainingJob controller: kopf handlers, the reconciler that applies planning's actions,
the progress scraper, and `operator.Operator` that wires them onto the runtime."""
