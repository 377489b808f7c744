"""`python -m carina.workloads`: run the workload named by CARINA_SPEC (the worker contract).

One process per rank, started by torch's elastic launcher or by a substrate that sets the
same variables:

    CARINA_SPEC=/etc/carina/spec.json CARINA_CHECKPOINT_URI=s3://bucket/job \\
        torchrun --nproc-per-node 2 -m carina.workloads

The spec file is {"kind": "pretrain", "config": {...camelCase PretrainConfig...}}. Every
variable and the exit codes are listed in `carina.workloads.worker`; the codes themselves are
`carina.workloads.config.ExitCode`.
"""

from __future__ import annotations

import sys

from carina.workloads.worker import main

if __name__ == "__main__":
    sys.exit(main())
