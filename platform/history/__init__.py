"""Job history: what a TrainingJob was and did, kept after the job itself is deleted.

`record` (the record's model, built from a job, its events, metrics and log tails), `query`
(the filters of a history listing and their rules), `migrations` (the numbered schema
changes) and `store` (SQLite or PostgreSQL behind one interface). Imports only `api`, so the
control plane and the embedded substrate can both write and read it.
"""
