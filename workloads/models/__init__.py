"""The model every workload trains or reads (`transformer`), and decoding with it (`generation`)."""
