"""Every workload on every device: what runs on the CPU runs the same way on a GPU.

Each test takes the `device` fixture (tests/unit/conftest.py): `cpu` everywhere, `cuda` where
there is a GPU (`pytest -m cuda`). Multi-rank runs use gloo on the CPU and NCCL on GPUs, one
GPU per rank.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from multirank import run_ranks
from workload_builders import tiny_config

from carina.workloads.config import (
    EvaluateConfig,
    ExitCode,
    FinetuneConfig,
    ModelSpec,
    PretrainConfig,
    QuantizeConfig,
)
from carina.workloads.contract import WorkerContext
from carina.workloads.data import ByteTokenizer
from carina.workloads.evaluate.harness import refusal_metrics, run_task
from carina.workloads.evaluate.scoring import continuation_logprobs
from carina.workloads.finetune.run import Finetuner, run_finetune
from carina.workloads.models.generation import generate_answers
from carina.workloads.models.transformer import Transformer
from carina.workloads.pretrain.run import StepRecord, Trainer, run_pretrain
from carina.workloads.quantize.report import perplexity, precision_keys
from carina.workloads.quantize.workload import QuantizeJob
from carina.workloads.runtime import checkpoint, packed
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.storage import open_store
from carina.workloads.tasks.loaders import load_task_data
from carina.workloads.tasks.types import qa_prompt

DATA = Path(__file__).parents[2] / "data"
TOK = ByteTokenizer()


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    spec = ModelSpec(preset="tiny", d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, max_seq_len=64)
    return Transformer(spec.resolve())


def saved_base(tmp_path: Path) -> str:
    """A complete checkpoint of a tiny random byte-level model."""
    model = tiny_model()
    uri = f"file://{tmp_path}/base"
    checkpoint.save(
        open_store(uri), 1, model, torch.optim.AdamW(model.parameters()), {}, model.arch
    )
    return uri


def one_rank(device: torch.device) -> Dist:
    return Dist(rank=0, world_size=1, local_rank=0, device=device)


# ---------------------------------------------------------------- pretraining


def bf16_config(parallelism: str = "ddp") -> PretrainConfig:
    return tiny_config(
        steps=8,
        logEvery=1,
        precision="bf16",
        parallelism=parallelism,
        schedule={"kind": "constant", "warmupSteps": 2},
    )


def one_process_losses(cfg: PretrainConfig, device: torch.device) -> list[float]:
    trainer = Trainer(cfg, WorkerContext(), one_rank(device), PreemptionFlag())
    losses: list[float] = []
    try:
        trainer.run(lambda rec, preempt: losses.append(rec.loss))
    finally:
        trainer.close()
    return losses


def pretrain_rank(rank: int, world: int, parallelism: str) -> tuple[str, list[float]]:
    """One rank of `run_pretrain` (it picks the device and the backend itself)."""
    losses: list[float] = []

    def on_step(rec: StepRecord, _preempt: PreemptionFlag) -> None:
        losses.append(rec.loss)

    ctx = WorkerContext(local_world_size=world, world_size=world, local_rank=rank)
    assert run_pretrain(bf16_config(parallelism), ctx, on_step) == ExitCode.SUCCEEDED
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    return device, losses


def test_bf16_pretraining_trains_on_the_device(device: torch.device) -> None:
    trainer = Trainer(bf16_config(), WorkerContext(), one_rank(device), PreemptionFlag())
    losses: list[float] = []
    try:
        assert trainer.amp == torch.bfloat16
        trainer.run(lambda rec, preempt: losses.append(rec.loss))
        assert {p.device for p in trainer.raw.parameters()} == {device}
        moments = [s["exp_avg"] for s in trainer.optimizer.state.values()]
        assert moments
        assert {m.device for m in moments} == {device}
    finally:
        trainer.close()
    assert len(losses) == 8
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_bf16_pretraining_on_two_ranks_follows_the_one_process_run(
    device: torch.device, parallelism: str
) -> None:
    ranks = run_ranks(pretrain_rank, 2, device, parallelism)
    single = one_process_losses(bf16_config(parallelism), device)
    expected = ["cpu", "cpu"] if device.type == "cpu" else ["cuda:0", "cuda:1"]
    assert [d for d, _ in ranks] == expected
    (_, first), (_, second) = ranks
    assert first == second  # every rank logs the global mean
    # The same global batches: only bf16 rounding of differently shaped matmuls differs.
    assert first == pytest.approx(single, rel=1e-2)
    assert first[-1] < 0.7 * first[0]


# ---------------------------------------------------------------- generation and SSR

PROMPTS = ["Document: a.\nQuestion: b?\nAnswer:", "Q: x?\nA:", "Q: y?\nA:", "Longer prompt here:"]


def test_batched_generation_equals_one_prompt_at_a_time_on_the_device(
    device: torch.device,
) -> None:
    model = tiny_model().to(device)
    batched = generate_answers(model, TOK, PROMPTS, max_new_tokens=12, batch_size=8)
    single = [generate_answers(model, TOK, [p], 12, batch_size=1)[0] for p in PROMPTS]
    assert batched == single


def test_generation_stops_at_the_newline_on_the_device(device: torch.device) -> None:
    model = tiny_model()
    model.norm.register_forward_hook(lambda module, args, out: torch.ones_like(out))
    with torch.no_grad():  # a head that only scores the newline: it always comes next
        model.lm_head.weight.zero_()
        model.lm_head.weight[ord("\n")] = 1.0
    assert generate_answers(model.to(device), TOK, PROMPTS, 12) == [""] * len(PROMPTS)


def finetune_config(base: str, steps: int = 2) -> FinetuneConfig:
    return FinetuneConfig.model_validate(
        {
            "base": base,
            "mode": "ssr",
            "data": {"generator": "grounded-qa", "examples": 8},
            "steps": steps,
            "batchSize": 4,
            "microBatchSize": 2,
            "maxNewTokens": 6,
            "schedule": {"kind": "constant", "warmupSteps": 0},
        }
    )


def test_ssr_answers_judges_and_trains_on_the_device(device: torch.device, tmp_path: Path) -> None:
    base = saved_base(tmp_path)
    out = f"file://{tmp_path}/ssr"
    ctx = WorkerContext(checkpoint_uri=out)
    tuner = Finetuner(finetune_config(base), ctx, one_rank(device), PreemptionFlag())
    try:
        assert tuner.raw.lm_head.weight.device == device
        base_model = checkpoint.load_pretrained(base, device)
        prompts = [r.prompt for r in tuner.records]
        answers = [generate_answers(base_model, TOK, [p], 6, batch_size=1)[0] for p in prompts]
        assert [r.model_answer for r in tuner.records] == answers
        for r in tuner.records:
            assert r.target == (r.model_answer if r.accepted else r.gold)
        assert tuner.run() == ExitCode.SUCCEEDED
    finally:
        tuner.close()
    trained = checkpoint.load_pretrained(out)
    assert not torch.equal(trained.lm_head.weight, base_model.lm_head.weight.cpu())


def finetune_rank(rank: int, world: int, base: str, out: str) -> int:
    ctx = WorkerContext(
        local_world_size=world, world_size=world, local_rank=rank, checkpoint_uri=out
    )
    return int(run_finetune(finetune_config(base, steps=1), ctx))


@pytest.mark.slow
def test_ssr_trains_on_two_ranks_and_saves_a_two_rank_checkpoint(
    device: torch.device, tmp_path: Path
) -> None:
    out = f"file://{tmp_path}/ssr2"
    assert run_ranks(finetune_rank, 2, device, saved_base(tmp_path), out) == [0, 0]
    assert checkpoint.read_manifest(open_store(out), 1)["worldSize"] == 2


# ---------------------------------------------------------------- evaluation


def eval_config() -> EvaluateConfig:
    def task(name: str, kind: str, fmt: str, path: str) -> dict[str, object]:
        return {"name": name, "kind": kind, "data": {"path": str(DATA / path), "format": fmt}}

    return EvaluateConfig.model_validate(
        {
            "base": "file:///unused",
            "maxNewTokens": 4,
            "tasks": [
                task("text", "perplexity", "text", "text_sample.jsonl"),
                task("mmlu", "multiple-choice", "mmlu", "mmlu_sample.jsonl"),
                task("qa", "refusal", "squad2", "squad2_sample.jsonl"),
            ],
        }
    )


def test_evaluation_on_the_device_scores_what_the_cpu_scores(device: torch.device) -> None:
    cfg = eval_config()
    data = {t.name: load_task_data(t.data) for t in cfg.tasks}
    cpu_model, model = tiny_model(), tiny_model().to(device)
    text, choice, refusal = cfg.tasks

    ppl = run_task(model, text, data["text"], cfg.batch_size, cfg.max_new_tokens)
    ppl_cpu = run_task(cpu_model, text, data["text"], cfg.batch_size, cfg.max_new_tokens)
    assert ppl.score == pytest.approx(ppl_cpu.score, rel=1e-4)

    pairs = [(ex.context, c) for ex in data["mmlu"] for c in ex.choices]
    scored = continuation_logprobs(model, TOK, pairs, cfg.batch_size)
    scored_cpu = continuation_logprobs(cpu_model, TOK, pairs, cfg.batch_size)
    assert [n for _, n in scored] == [n for _, n in scored_cpu]
    assert [lp for lp, _ in scored] == pytest.approx([lp for lp, _ in scored_cpu], abs=1e-3)
    accuracy = run_task(model, choice, data["mmlu"], cfg.batch_size, cfg.max_new_tokens)
    assert accuracy.n == len(data["mmlu"])
    assert 0.0 <= accuracy.score <= 1.0

    result = run_task(model, refusal, data["qa"], cfg.batch_size, cfg.max_new_tokens)
    one_by_one = [generate_answers(model, TOK, [qa_prompt(ex)], 4, 1)[0] for ex in data["qa"]]
    assert result.metrics == pytest.approx(refusal_metrics(data["qa"], one_by_one), nan_ok=True)


# ---------------------------------------------------------------- quantization


def test_quantized_checkpoint_from_the_device_reproduces_its_perplexity_on_the_cpu(
    device: torch.device, tmp_path: Path
) -> None:
    cfg = QuantizeConfig.model_validate(
        {
            "base": saved_base(tmp_path),
            "method": "qat-kurtosis",
            "steps": 2,
            "groupSize": 16,
            "weightPtq": "gptq",
            "data": {"source": "synthetic", "valFraction": 0.2},
            "seqLen": 32,
            "batchSize": 4,
            "calibrationBatches": 1,
            "evalBatches": 2,
            "schedule": {"kind": "constant", "warmupSteps": 0},
        }
    )
    store = open_store(f"file://{tmp_path}/w4a4")
    ctx = WorkerContext(checkpoint_uri=store.uri)
    job = QuantizeJob(cfg, ctx, one_rank(device), PreemptionFlag())
    try:
        assert job.run() == ExitCode.SUCCEEDED
        assert {p.device for p in job.raw.parameters()} == {device}
    finally:
        job.close()
    report = json.loads(store.get_bytes(f"{packed.DIRECTORY}/report.json") or b"{}")
    model, _, _ = packed.load_quantized(store)  # on the CPU
    windows = job.corpus.val
    ppl, _ = perplexity(
        model, windows, cfg.eval_batches * cfg.batch_size, cfg.batch_size, torch.device("cpu")
    )
    key = precision_keys(cfg.weight_bits, cfg.activation_bits)[2]
    assert ppl == pytest.approx(report["perplexity"][key], rel=1e-3)
