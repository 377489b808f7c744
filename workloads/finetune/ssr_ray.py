"""SSR's generation and judging (steps 1-2 of `ssr`) on Ray Data, for large training sets.

    examples -> from_items -> Generator pool (the base answers) -> Judge pool -> take_all

Each pool is a Ray Data actor pool (`map_batches` with a callable class and
`ActorPoolStrategy`): an actor loads the base checkpoint or builds the judge once and then
serves batch after batch. The records are the ones `ssr.build_records` makes from the same
answers and verdicts, in the examples' order, so the plain loop and this path give the same
training set (tests/integration/test_ssr_engines.py).

Ray is an optional extra (`pip install 'carina[ray]'`): it is imported only inside
`build_records_on_ray`, and `choose_engine` decides, from `config.ssr`, whether this path runs.
Resources, from docs/benchmarks.md ("SSR on Ray Data") and the Ray notes behind it:
- actors reserve fractional CPUs (`actorCpus`, 0.5 by default) and must leave Ray Data at
  least one whole CPU: on 2 CPUs two pools at one CPU each left none and the job hung;
- generating actors share the visible GPUs by fractions (`gpusPerGenerator`);
- a cluster started here pins `num_cpus`/`num_gpus` to the worker's own (Ray would count the
  host's cores), caps the object store, starts no dashboard, and keeps its socket directory
  short (an AF_UNIX path is at most 107 bytes);
- Ray replaces the SIGTERM handler when it starts: the run loop's is put back, so preemption
  still saves and exits 75.
Under `RAY_ADDRESS` (a KubeRay cluster) the pipeline joins that cluster instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carina.workloads.config import ExitCode, JudgeSpec, SSREngine, SSRSpec
from carina.workloads.errors import WorkerError
from carina.workloads.finetune import ssr
from carina.workloads.judges import JudgeItem, Verdict
from carina.workloads.runtime.telemetry import log_event
from carina.workloads.tasks.types import QAExample

RAY_EXTRA = "pip install 'carina[ray]'"
# Rows are short texts and each actor loads the model from the checkpoint store, not through
# the object store: a small store is enough and leaves the memory to the models.
OBJECT_STORE_BYTES = 512 * 1024**2


def ray_installed() -> bool:
    """Whether the `ray` extra is importable here (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def choose_engine(spec: SSRSpec, rows: int, ray_available: bool) -> SSREngine:
    """PLAIN or RAY for `rows` examples; `auto` takes Ray from `rayMinRows` on, if installed."""
    engine = SSREngine(spec.engine)
    if engine == SSREngine.RAY and not ray_available:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"config.ssr.engine: 'ray' needs Ray Data, which is not installed ({RAY_EXTRA})",
        )
    if engine != SSREngine.AUTO:
        return engine
    if rows < spec.ray_min_rows:
        return SSREngine.PLAIN
    if not ray_available:
        log_event(
            "ssr-engine",
            engine="plain",
            note=f"{rows} examples reach config.ssr.rayMinRows ({spec.ray_min_rows}) but ray "
            f"is not installed ({RAY_EXTRA}): generating and judging in the plain loop",
        )
        return SSREngine.PLAIN
    return SSREngine.RAY


@dataclass(frozen=True)
class PoolPlan:
    """The two actor pools and what each actor reserves."""

    generators: int
    judges: int
    actor_cpus: float
    gpus_per_generator: float


def plan_pools(spec: SSRSpec, cpus: float, gpus: float) -> PoolPlan:
    """The pools `spec` asks for, checked against the cluster's CPUs and GPUs."""
    reserved = (spec.generator_actors + spec.judge_actors) * spec.actor_cpus
    if reserved > cpus - 1:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"config.ssr.actorCpus × (generatorActors + judgeActors) = {reserved:g} CPUs must "
            f"leave at least one of the cluster's {cpus:g} CPUs to Ray Data's own tasks "
            "(fewer actors, or a smaller actorCpus such as 0.5)",
        )
    share = spec.gpus_per_generator
    if share is None:
        share = min(1.0, gpus / spec.generator_actors) if gpus else 0.0
    if share * spec.generator_actors > gpus + 1e-9:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"config.ssr.gpusPerGenerator × generatorActors = "
            f"{share * spec.generator_actors:g} GPUs, more than the {gpus:g} visible",
        )
    return PoolPlan(spec.generator_actors, spec.judge_actors, spec.actor_cpus, share)


def worker_cpus() -> int:
    """The whole CPUs this process may use: its cgroup quota if set, else its CPU affinity."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0))


def example_rows(examples: list[QAExample]) -> list[dict[str, Any]]:
    """The pipeline's input rows: the example's position (to restore order) and its texts."""
    return [
        {
            "index": i,
            "prompt": ssr.qa_prompt(ex),
            "question": ex.question,
            "golds": json.dumps(list(ex.answers)),  # a list column would arrive as an array
        }
        for i, ex in enumerate(examples)
    ]


class Generator:
    """A generating actor: the base checkpoint, loaded once, answers each batch greedily."""

    def __init__(self, base: str, max_new_tokens: int, use_gpu: bool) -> None:
        import torch

        from carina.workloads.data import ByteTokenizer
        from carina.workloads.runtime import checkpoint

        device = torch.device("cuda" if use_gpu else "cpu")
        self.model = checkpoint.load_pretrained(base, device)
        self.tokenizer = ByteTokenizer()
        self.max_new_tokens = max_new_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from carina.workloads.models.generation import generate_answers

        prompts = [str(p) for p in batch["prompt"]]
        answers = generate_answers(
            self.model, self.tokenizer, prompts, self.max_new_tokens, len(prompts)
        )
        return {**batch, "answer": np.array(answers, dtype=object)}


class Judge:
    """A judging actor: the judge of `config.judge`, built once, decides each batch."""

    def __init__(self, judge: dict[str, Any]) -> None:
        from carina.workloads.judges import build_judge

        self.judge = build_judge(JudgeSpec.model_validate(judge))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            JudgeItem(str(q), tuple(json.loads(str(g))), str(a))
            for q, g, a in zip(batch["question"], batch["golds"], batch["answer"], strict=True)
        ]
        verdicts = self.judge.judge(items)
        return {
            **batch,
            "accepted": np.array([v.accepted for v in verdicts], dtype=bool),
            "reason": np.array([v.reason for v in verdicts], dtype=object),
            "error": np.array([v.error or "" for v in verdicts], dtype=object),
        }


@contextmanager
def kept_signal_handlers() -> Iterator[None]:
    """Put back the SIGTERM and SIGINT handlers Ray replaces when it starts.

    `ray.init` installs its own (and `ray.shutdown` leaves them): without this, a SIGTERM
    after the dataset is built would skip the run loop's save-and-exit-75.
    """
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in saved.items():
                if handler is not None:
                    signal.signal(signum, handler)


@contextmanager
def ray_cluster(cpus: int, gpus: int) -> Iterator[dict[str, float]]:
    """A Ray cluster to run on, and its resources: the one under RAY_ADDRESS, or a local one."""
    import ray

    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    if os.environ.get("RAY_ADDRESS"):
        try:
            with kept_signal_handlers():
                ray.init(log_to_driver=False)
            yield ray.cluster_resources()
        finally:
            with kept_signal_handlers():
                ray.shutdown()
        return
    if not os.access(Path.home(), os.W_OK):
        # Ray writes its auth token under ~/.ray and refuses to start when it cannot.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp_dir = f"/tmp/ray-{os.getpid()}"
    try:
        with kept_signal_handlers():
            ray.init(
                num_cpus=cpus,
                num_gpus=gpus,
                object_store_memory=OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,
                _temp_dir=temp_dir,
            )
        yield ray.cluster_resources()
    finally:
        with kept_signal_handlers():
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def build_records_on_ray(
    examples: list[QAExample],
    base: str,
    judge: JudgeSpec,
    max_new_tokens: int,
    spec: SSRSpec,
    gpus: int = 0,
) -> list[ssr.SSRRecord]:
    """Steps 1-3 of SSR through two Ray Data actor pools; records in the examples' order.

    `base` is the checkpoint URI every generating actor loads; `gpus`, those this process sees.
    """
    import ray

    with ray_cluster(worker_cpus(), gpus) as resources:
        plan = plan_pools(spec, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
        ray.data.DataContext.get_current().enable_progress_bars = False
        # Enough blocks to keep every actor busy; about 8 batches each on large sets.
        per_block = 8 * spec.batch_size
        blocks = max(4 * (plan.generators + plan.judges), -(-len(examples) // per_block))
        blocks = max(1, min(len(examples), blocks))
        ds: ray.data.Dataset = ray.data.from_items(
            example_rows(examples), override_num_blocks=blocks
        )
        ds = ds.map_batches(
            Generator,
            fn_constructor_kwargs={
                "base": base,
                "max_new_tokens": max_new_tokens,
                "use_gpu": plan.gpus_per_generator > 0,
            },
            batch_size=spec.batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan.generators),
            num_cpus=plan.actor_cpus,
            num_gpus=plan.gpus_per_generator,
        )
        ds = ds.map_batches(
            Judge,
            fn_constructor_kwargs={"judge": judge.model_dump(mode="json")},
            batch_size=spec.batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan.judges),
            num_cpus=plan.actor_cpus,
        )
        rows = sorted(ds.take_all(), key=lambda r: int(r["index"]))
    answers = [str(r["answer"]) for r in rows]
    verdicts = [
        Verdict(bool(r["accepted"]), str(r["reason"]), str(r["error"]) or None) for r in rows
    ]
    return ssr.build_records(examples, answers, verdicts)
