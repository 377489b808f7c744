"""Long-context data and evaluation: repository packing, upsampling, mixtures, RoPE θ, passkeys."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from carina.workloads.config import DataSpec, ModelSpec, PretrainConfig, UpsampleSpec
from carina.workloads.data import ByteTokenizer, Windows, build_corpus, load_documents
from carina.workloads.longcontext import loss_by_position, passkey_prompt, passkey_retrieval
from carina.workloads.mixture import MixtureSampler
from carina.workloads.models.transformer import Transformer
from carina.workloads.passkey import QUESTION, needle
from carina.workloads.pretrain.stages import stage_learning_rate, stage_plan, tokens_before
from carina.workloads.repository_packing import repository_documents, upsample_long
from carina.workloads.runtime.schedules import power_lr

torch.set_num_threads(1)


def write_repo(root: Path, files: dict[str, str]) -> list[Path]:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return sorted(root / name for name in files)


def file_order(doc: bytes) -> list[str]:
    return [line[2:] for line in doc.decode().splitlines() if line.startswith("# ")]


def test_a_repository_is_one_document_init_first_then_modules_after_what_they_import(
    tmp_path: Path,
) -> None:
    paths = write_repo(
        tmp_path,
        {
            "shop/README.md": "how to shop\n",
            "shop/__init__.py": "from .cart import Cart\n",
            "shop/api.py": "from shop.cart import Cart\nfrom . import models\n",
            "shop/cart.py": "from .models import Item\n",
            "shop/models.py": "import dataclasses\n",
            "shop/sub/__init__.py": "",
            "tool.py": "import shop\n",
        },
    )
    docs = repository_documents(paths, None)
    assert len(docs) == 2  # the shop package, and the module at the root on its own
    assert file_order(docs[0]) == [
        "shop/README.md",
        "shop/__init__.py",
        "shop/sub/__init__.py",
        "shop/models.py",
        "shop/cart.py",
        "shop/api.py",
    ]
    assert file_order(docs[1]) == ["tool.py"]


def test_an_import_cycle_is_broken_in_path_order(tmp_path: Path) -> None:
    paths = write_repo(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "from . import a\n",
            "pkg/c.py": "",
        },
    )
    (doc,) = repository_documents(paths, None)
    # c imports nothing and goes first; the cycle a <-> b is broken by path order.
    assert file_order(doc) == ["pkg/__init__.py", "pkg/c.py", "pkg/a.py", "pkg/b.py"]


def test_stdlib_packages_pack_whole_with_their_modules_in_import_order() -> None:
    spec = DataSpec(source="python-stdlib", packing="repository", max_bytes=40_000_000)
    docs = load_documents(spec, seed=0)
    json_pkg = next(d for d in docs if d.startswith(b"# json/__init__.py\n"))
    order = file_order(json_pkg)
    assert order[0] == "json/__init__.py"
    # json.decoder imports json.scanner: the scanner comes first, in the same document.
    assert order.index("json/scanner.py") < order.index("json/decoder.py")
    plain = load_documents(DataSpec(source="python-stdlib", max_bytes=40_000_000), seed=0)
    assert len(docs) < len(plain) / 5  # far fewer, far longer documents


def test_packing_repository_is_refused_for_generated_sources() -> None:
    with pytest.raises(ValueError, match="packing repository needs source python-stdlib or files"):
        DataSpec(source="synthetic", packing="repository")


def test_long_documents_are_upsampled_in_training_only() -> None:
    docs = [b"x" * 10, b"y" * 1000, b"z" * 20, b"w" * 2000]
    out = upsample_long(docs, UpsampleSpec(min_bytes=500, factor=3.0), seed=0)
    assert Counter(out) == {docs[0]: 1, docs[1]: 3, docs[2]: 1, docs[3]: 3}
    many = [b"L" * 600] * 1000
    fractional = upsample_long(many, UpsampleSpec(min_bytes=500, factor=2.5), seed=1)
    assert 2.4 < len(fractional) / len(many) < 2.6
    assert fractional == upsample_long(many, UpsampleSpec(min_bytes=500, factor=2.5), seed=1)
    spec = {"source": "synthetic", "valFraction": 0.1}
    base = build_corpus(DataSpec.model_validate(spec), 32, 0)
    up = build_corpus(
        DataSpec.model_validate({**spec, "upsampleLong": {"minBytes": 1, "factor": 2.0}}), 32, 0
    )
    assert len(up.train.stream) == 2 * len(base.train.stream)
    assert torch.equal(up.val.stream, base.val.stream)


def test_a_mixture_draws_sources_by_weight_and_resumes_exactly() -> None:
    sampler = MixtureSampler([100, 50], [3.0, 1.0], seed=5, rank=0, world=1)
    picks = [p for _ in range(200) for p in sampler.next_picks(8)]
    share = sum(1 for s, _ in picks if s == 0) / len(picks)
    assert 0.7 < share < 0.8
    state = sampler.state_dict()
    ahead = [sampler.next_picks(8) for _ in range(5)]
    resumed = MixtureSampler([100, 50], [3.0, 1.0], seed=5, rank=0, world=1)
    resumed.load_state_dict(state)
    assert [resumed.next_picks(8) for _ in range(5)] == ahead


def test_a_mixture_sees_the_same_global_batches_whatever_the_world_size() -> None:
    one = MixtureSampler([40, 40, 40], [1.0, 1.0, 2.0], seed=1, rank=0, world=1)
    two = [MixtureSampler([40, 40, 40], [1.0, 1.0, 2.0], seed=1, rank=r, world=2) for r in (0, 1)]
    for _ in range(10):
        assert one.next_picks(8) == two[0].next_picks(8) + two[1].next_picks(8)


def test_stages_count_tokens_and_schedules_by_stage() -> None:
    cfg = PretrainConfig.model_validate(
        {
            "batchSize": 4,
            "microBatchSize": 4,
            "seqLen": 64,
            "model": {"maxSeqLen": 256},
            "schedule": {"kind": "constant", "warmupSteps": 2},
            "stages": [
                {"name": "a", "steps": 10},
                {
                    "name": "b",
                    "tokens": 4 * 256 * 5,
                    "seqLen": 256,
                    "ropeTheta": 5e4,
                    "schedule": {"kind": "cosine", "warmupSteps": 2},
                },
            ],
        }
    )
    plan = stage_plan(cfg)
    assert [(s.name, s.start, s.steps, s.seq_len, s.rope_theta) for s in plan] == [
        ("a", 0, 10, 64, 10000.0),
        ("b", 10, 5, 256, 5e4),
    ]
    assert cfg.total_steps() == 15
    assert tokens_before(plan, 12, 4) == 10 * 4 * 64 + 2 * 4 * 256
    # stage b warms up again from its own first step
    assert stage_learning_rate(cfg, plan, 10, 0) == pytest.approx(cfg.optimizer.lr / 2)
    assert stage_learning_rate(cfg, plan, 9, 0) == pytest.approx(cfg.optimizer.lr)


def test_the_power_schedule_counts_the_tokens_of_every_stage() -> None:
    cfg = PretrainConfig.model_validate(
        {
            "batchSize": 4,
            "microBatchSize": 4,
            "model": {"maxSeqLen": 256},
            "schedule": {"kind": "power", "warmupSteps": 2, "decayFraction": 0.0},
            "stages": [
                {"name": "a", "steps": 10, "seqLen": 64},
                {"name": "b", "steps": 10, "seqLen": 256},
            ],
        }
    )
    plan = stage_plan(cfg)
    spec = cfg.schedule
    for step in (5, 12, 19):  # the lr of step s follows n = tokens through step s
        n = tokens_before(plan, step + 1, 4)
        expected = power_lr(n, 4, spec.power_a, spec.power_b, spec.power_lr_max)
        assert stage_learning_rate(cfg, plan, step, 0) == pytest.approx(expected)


def test_existing_manifests_keep_one_stage_on_data() -> None:
    cfg = PretrainConfig.model_validate({"steps": 30, "seqLen": 64})
    (only,) = stage_plan(cfg)
    assert (only.steps, only.seq_len, only.mixture) == (30, 64, (("data", 1.0),))
    assert "stages" not in cfg.to_wire()
    assert "sources" not in cfg.to_wire()


def test_rope_theta_changes_the_model_and_the_recorded_architecture() -> None:
    torch.manual_seed(0)
    model = Transformer(ModelSpec(preset="tiny").resolve()).eval()
    x = torch.randint(0, 256, (1, 64))
    before, _ = model(x)
    model.set_rope(40_000.0)
    after, _ = model(x)
    assert model.arch.rope_theta == 40_000.0
    assert not torch.allclose(before, after)
    model.set_rope(10_000.0)
    assert torch.equal(model(x)[0], before)


def test_a_passkey_prompt_holds_the_key_at_its_depth_within_its_length() -> None:
    tok = ByteTokenizer()
    for depth in (0.0, 0.5, 1.0):
        prompt, answer = passkey_prompt(tok, 512, depth, "40213")
        text = tok.decode(prompt)
        assert len(prompt) + len(answer) <= 512
        assert text.endswith(QUESTION)
        where = text.index(needle("40213")) / len(text)
        assert abs(where - depth * 0.8) < 0.25  # the question takes the end of the prompt
        assert tok.decode(answer) == "40213"


def test_retrieval_and_position_loss_run_past_the_trained_length() -> None:
    torch.manual_seed(0)
    model = Transformer(ModelSpec(preset="tiny").resolve())  # maxSeqLen 256
    scores = passkey_retrieval(model, ByteTokenizer(), 128, (1, 8), keys_per_depth=1)
    assert [s.length for s in scores] == [128, 1024]
    assert all(0.0 <= s.digit_accuracy <= 1.0 and s.trials == 5 for s in scores)
    stream = torch.tensor(list(random.Random(0).randbytes(4000)))
    buckets = loss_by_position(model, Windows(stream, 512), buckets=4, max_windows=4)
    assert [(b.start, b.end) for b in buckets] == [(0, 128), (128, 256), (256, 384), (384, 512)]


class InductionOracle(torch.nn.Module):
    """Predicts the token that followed the last earlier occurrence of the current 12-gram: a
    perfect copier, so passkey retrieval must score it 1.0 at every length and depth."""

    def __init__(self) -> None:
        super().__init__()
        self.arch = ModelSpec(preset="tiny").resolve()
        self.rope_cos = torch.zeros(1 << 14, 1)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        ids = idx[0].tolist()
        logits = torch.zeros(1, len(ids), self.arch.vocab_size)
        seen: dict[tuple[int, ...], int] = {}
        for t in range(len(ids)):
            gram = tuple(ids[max(0, t - 11) : t + 1])
            if gram in seen:
                logits[0, t, ids[seen[gram] + 1]] = 1.0
            if t + 1 < len(ids):
                seen[gram] = t
        return logits, None


def test_a_model_that_copies_retrieves_every_key_and_a_blank_one_none() -> None:
    oracle = InductionOracle()
    scores = passkey_retrieval(oracle, ByteTokenizer(), 128, (1, 2, 4, 8), keys_per_depth=2)  # type: ignore[arg-type]
    assert [(s.exact, s.digit_accuracy) for s in scores] == [(1.0, 1.0)] * 4
    torch.manual_seed(0)
    blank = Transformer(ModelSpec(preset="tiny").resolve())
    assert all(s.exact == 0.0 for s in passkey_retrieval(blank, ByteTokenizer(), 128, (1, 2)))
