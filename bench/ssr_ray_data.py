"""SSR generation and judging: the plain loop against Ray Data, side by side, at two sizes.

    .venv/bin/python bench/ssr_ray_data.py [--sizes 200 1000] [--threads 1] [--out r.json]

One base checkpoint (a random `tiny` byte-level decoder unless `--d-model`/`--layers` say
otherwise: the speed of decoding does not depend on what the weights learned), one set of
grounded-QA prompts per size and the `rule` judge. For each size, in one process:

- plain: `run.build_records_plain`, what rank 0 runs when `config.ssr.engine` is `plain`
  (greedy decoding in batches of 64 on `--threads` torch threads, then the judge);
- ray: `ssr_ray.build_records_on_ray`, a local Ray cluster pinned to this machine's CPUs with
  one generating and one judging actor at `--actor-cpus` each (what `engine: ray` runs).

Ray's start-up (`ray.init` with the worker's settings) is timed once and reported apart: the
rows/s columns are the pipelines' own; "ray, with start-up" adds the start to each size's
time, which is what one job pays. Each size also checks that both paths built the same records.
Method and results: docs/benchmarks.md, "SSR on Ray Data".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from typing import Any

import torch

from carina.workloads.config import FinetuneConfig, ModelSpec
from carina.workloads.data import ByteTokenizer
from carina.workloads.finetune import ssr_ray
from carina.workloads.finetune.run import build_records_plain
from carina.workloads.models.transformer import Transformer
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store
from carina.workloads.tasks import grounded_qa


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the plain loop")
    p.add_argument("--actor-cpus", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=64, help="rows per Ray Data batch")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return p.parse_args()


def save_base(root: str, args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    model = Transformer(
        ModelSpec(preset="tiny", d_model=args.d_model, n_layers=args.layers).resolve()
    )
    uri = f"file://{root}/base"
    optimizer = torch.optim.AdamW(model.parameters())
    checkpoint.save(open_store(uri), 1, model, optimizer, {"step": 1}, model.arch)
    return uri


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ssr-bench-") as root:
        base = save_base(root, args)
        model = checkpoint.load_pretrained(base)
        warm = FinetuneConfig.model_validate({"base": base, "maxNewTokens": 4})
        build_records_plain(warm, grounded_qa.generate(8, 2), model, ByteTokenizer())
        t0 = time.perf_counter()
        with ssr_ray.ray_cluster(ssr_ray.worker_cpus(), 0) as resources:
            startup = time.perf_counter() - t0
            print(f"ray start-up {startup:.1f} s; cluster {resources}", flush=True)
            for n in args.sizes:
                cfg = FinetuneConfig.model_validate(
                    {
                        "base": base,
                        "judge": {"kind": "rule"},
                        "data": {"generator": "grounded-qa", "examples": n, "seed": 1},
                        "maxNewTokens": args.max_new_tokens,
                        "ssr": {
                            "engine": "ray",
                            "actorCpus": args.actor_cpus,
                            "batchSize": args.batch_size,
                        },
                    }
                )
                examples = grounded_qa.generate(n, 1)
                t = time.perf_counter()
                plain = build_records_plain(cfg, examples, model, ByteTokenizer())
                plain_s = time.perf_counter() - t
                t = time.perf_counter()
                on_ray = ssr_ray.build_records_on_ray(
                    examples, base, cfg.judge, cfg.max_new_tokens, cfg.ssr
                )
                ray_s = time.perf_counter() - t
                row = {
                    "rows": n,
                    "plainSeconds": round(plain_s, 2),
                    "raySeconds": round(ray_s, 2),
                    "rayStartupSeconds": round(startup, 2),
                    "plainRowsPerSecond": round(n / plain_s, 1),
                    "rayRowsPerSecond": round(n / ray_s, 1),
                    "rayWithStartupRowsPerSecond": round(n / (ray_s + startup), 1),
                    "sameRecords": on_ray == plain,
                    "accepted": sum(r.accepted for r in plain),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
        ray_version = ray.__version__
    machine = (
        f"{platform.machine()}, {ssr_ray.worker_cpus()} CPUs, torch {torch.__version__} "
        f"({args.threads} threads in the plain loop), ray {ray_version}"
    )
    print()
    print(
        "| rows | plain rows/s | Ray Data rows/s | Ray Data with start-up rows/s "
        "| Ray / plain | same records |"
    )
    print("|---:|---:|---:|---:|---:|:---:|")
    for r in results:
        ratio = r["rayRowsPerSecond"] / r["plainRowsPerSecond"]
        print(
            f"| {r['rows']} | {r['plainRowsPerSecond']} | {r['rayRowsPerSecond']} "
            f"| {r['rayWithStartupRowsPerSecond']} | {ratio:.2f} "
            f"| {'yes' if r['sameRecords'] else 'NO'} |"
        )
    print(f"\n{machine}; Ray start-up {results[0]['rayStartupSeconds'] if results else '-'} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
