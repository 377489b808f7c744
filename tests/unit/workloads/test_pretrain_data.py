"""Tokenizers, corpora and the resumable, rank-sharded sampler."""

from __future__ import annotations

from pathlib import Path

import pytest

from carina.workloads.config import DataSpec, ExitCode
from carina.workloads.data import (
    ByteTokenizer,
    ShardedSampler,
    build_corpus,
    load_documents,
    load_tokenizer,
    split_documents,
)
from carina.workloads.errors import WorkerError


def test_byte_tokenizer_round_trips_utf8_and_drops_specials() -> None:
    tok = ByteTokenizer()
    ids = tok.encode("héllo ✓")
    assert max(ids) < 256
    assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == "héllo ✓"


def test_stdlib_corpus_is_deterministic_and_capped() -> None:
    spec = DataSpec(source="python-stdlib", max_bytes=200_000)
    a, b = load_documents(spec, 0), load_documents(spec, 0)
    assert a == b
    assert sum(map(len, a)) == 200_000


def test_files_corpus_reads_globs_in_sorted_order(tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt", "sub/c.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    spec = DataSpec(source="files", paths=[str(tmp_path / "**" / "*.txt")])
    assert load_documents(spec, 0) == [b"a.txt", b"b.txt", b"sub/c.txt"]


def test_a_glob_matching_nothing_is_missing_input(tmp_path: Path) -> None:
    spec = DataSpec(source="files", paths=[str(tmp_path / "*.nope")])
    with pytest.raises(WorkerError) as e:
        load_documents(spec, 0)
    assert e.value.exit_code == ExitCode.NO_INPUT


def test_tokenizer_file_without_the_tokenizers_package_is_a_config_error(tmp_path: Path) -> None:
    # The package is optional: without it the spec cannot run; with it the file must exist.
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        with pytest.raises(WorkerError) as e:
            load_tokenizer(str(tmp_path / "tok.json"))
        assert e.value.exit_code == ExitCode.BAD_CONFIG
        assert "tokenizers" in e.value.message
    else:
        with pytest.raises(WorkerError) as e:
            load_tokenizer(str(tmp_path / "tok.json"))
        assert e.value.exit_code == ExitCode.NO_INPUT


def test_every_fiftieth_document_is_held_out() -> None:
    docs = [bytes([i]) for i in range(100)]
    train, val = split_documents(docs, 0.02)
    assert val == [bytes([49]), bytes([99])]
    assert len(train) == 98


def test_ranks_split_each_global_micro_batch_without_overlap() -> None:
    whole = ShardedSampler(100, seed=3, rank=0, world_size=1)
    ranks = [ShardedSampler(100, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(30):  # crosses epoch boundaries (30 · 8 > 100)
        expected = whole.next_indices(8)
        assert ranks[0].next_indices(8) + ranks[1].next_indices(8) == expected


def test_sampler_resumes_exactly_from_its_state() -> None:
    a = ShardedSampler(37, seed=1, rank=0, world_size=1)
    for _ in range(7):
        a.next_indices(4)
    b = ShardedSampler(37, seed=1, rank=0, world_size=1)
    b.load_state_dict(a.state_dict())
    assert [a.next_indices(4) for _ in range(20)] == [b.next_indices(4) for _ in range(20)]


def test_each_epoch_visits_every_window_once() -> None:
    s = ShardedSampler(24, seed=0, rank=0, world_size=1)
    epoch = [i for _ in range(3) for i in s.next_indices(8)]
    assert sorted(epoch) == list(range(24))


def test_corpus_windows_hold_inputs_and_shifted_targets() -> None:
    corpus = build_corpus(DataSpec(source="synthetic", val_fraction=0.1), seq_len=32, seed=0)
    x, y = corpus.train.batch([0, 5])
    assert x.shape == y.shape == (2, 32)
    assert (x[:, 1:] == y[:, :-1]).all()
    assert len(corpus.val) > 0


def test_a_corpus_shorter_than_one_sequence_is_bad_data(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("short")
    spec = DataSpec(source="files", paths=[str(tmp_path / "a.txt")], val_fraction=0.0)
    with pytest.raises(WorkerError) as e:
        build_corpus(spec, seq_len=64, seed=0)
    assert e.value.exit_code == ExitCode.BAD_DATA


def test_a_tokenizers_file_tokenizes_the_corpus(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "</s>"])
    tok.train_from_iterator(["def f(x):\n    return x + 1\n"] * 20, trainer)
    tok.save(str(tmp_path / "tok.json"))
    spec = DataSpec(source="python-stdlib", max_bytes=20_000, tokenizer=str(tmp_path / "tok.json"))
    corpus = build_corpus(spec, seq_len=32, seed=0)
    assert corpus.tokenizer.eos_id == tok.token_to_id("</s>")
    assert len(corpus.train) > 0
    assert int(corpus.train.stream.max()) < corpus.tokenizer.vocab_size
