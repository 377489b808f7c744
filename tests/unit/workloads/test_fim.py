"""Fill-in-the-middle on training documents: layouts, rates, sentinels and the config."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydantic import ValidationError

from carina.workloads.config import BYTE_VOCAB, DataSpec, PretrainConfig, describe_errors
from carina.workloads.data import ByteTokenizer, HFTokenizer, build_corpus, load_tokenizer, pack
from carina.workloads.errors import WorkerError
from carina.workloads.fim import apply_fim, rearrange, restore, split_points

S = ByteTokenizer.FIM_SENTINELS
DOC = np.frombuffer(b"def add(a, b):\n    return a + b\n", dtype=np.uint8).astype(np.int32)


@pytest.mark.parametrize("spm", [False, True])
def test_each_layout_puts_the_middle_last_and_restores_the_document(spm: bool) -> None:
    out = rearrange(DOC, (4, 7), spm, S)
    prefix, middle, suffix = DOC[:4].tolist(), DOC[4:7].tolist(), DOC[7:].tolist()
    if spm:
        assert out.tolist() == [S.suffix, *suffix, S.prefix, *prefix, S.middle, *middle, S.end]
    else:
        assert out.tolist() == [S.prefix, *prefix, S.suffix, *suffix, S.middle, *middle, S.end]
    assert restore(out, S).tolist() == DOC.tolist()


def test_every_cut_of_a_document_round_trips_in_both_layouts() -> None:
    rng = random.Random(0)
    for _ in range(200):
        cut = split_points(len(DOC), rng)
        for spm in (False, True):
            assert restore(rearrange(DOC, cut, spm, S), S).tolist() == DOC.tolist()


def test_the_rate_and_the_spm_share_hold_statistically_and_repeat_by_seed() -> None:
    docs = [DOC.copy() for _ in range(4000)]
    out = apply_fim(docs, rate=0.5, spm_rate=0.25, seed=7, s=S)
    rearranged = [d for d in out if d[-1] == S.end]
    spm = [d for d in rearranged if d[0] == S.suffix]
    assert abs(len(rearranged) / len(docs) - 0.5) < 0.03
    assert abs(len(spm) / len(rearranged) - 0.25) < 0.03
    again = apply_fim(docs, rate=0.5, spm_rate=0.25, seed=7, s=S)
    assert all(a.tolist() == b.tolist() for a, b in zip(out, again, strict=True))
    other = apply_fim(docs, rate=0.5, spm_rate=0.25, seed=8, s=S)
    assert any(a.tolist() != b.tolist() for a, b in zip(out, other, strict=True))
    assert all(restore(d, S).tolist() == DOC.tolist() for d in rearranged)


def test_rate_zero_leaves_documents_alone_and_rate_one_rearranges_all() -> None:
    docs = [DOC.copy() for _ in range(50)]
    assert apply_fim(docs, 0.0, 0.5, 0, S) is docs
    assert all(d[-1] == S.end for d in apply_fim(docs, 1.0, 0.5, 0, S))


def test_sentinels_are_single_ids_no_text_encodes_to() -> None:
    tok = ByteTokenizer(fim=True)
    assert tok.vocab_size == BYTE_VOCAB + 4
    ids = set(S.ids())
    assert len(ids) == 4
    assert min(ids) >= BYTE_VOCAB
    assert max(ids) < tok.vocab_size
    text = "<fim_prefix><fim_middle><fim_suffix><fim_end> every byte: " + "".join(
        chr(i) for i in range(256)
    )
    assert not ids & set(tok.encode(text))
    assert tok.decode([S.prefix, *tok.encode("ab"), S.middle]) == "ab"


def test_the_plain_byte_tokenizer_keeps_its_vocabulary_and_has_no_sentinels() -> None:
    assert ByteTokenizer().vocab_size == BYTE_VOCAB
    assert ByteTokenizer().fim_sentinels() is None


def test_a_fim_corpus_has_sentinels_in_training_only_and_the_larger_vocabulary() -> None:
    spec = DataSpec(source="synthetic", val_fraction=0.1, fim={"rate": 0.5, "spmRate": 0.5})
    corpus = build_corpus(spec, seq_len=64, seed=0)
    assert corpus.tokenizer.vocab_size == 264
    train = corpus.train.stream
    assert int((train == S.middle).sum()) > 0
    assert int((train == S.end).sum()) == int((train == S.middle).sum())
    assert int(corpus.val.stream.max()) < BYTE_VOCAB  # held-out loss stays left-to-right
    plain = build_corpus(DataSpec(source="synthetic", val_fraction=0.1), seq_len=64, seed=0)
    assert plain.tokenizer.vocab_size == BYTE_VOCAB
    assert int(plain.train.stream.max()) < BYTE_VOCAB


def test_pack_is_deterministic_by_seed() -> None:
    docs = [b"x = 1\n" * 20] * 30
    spec = DataSpec(source="synthetic", fim={"rate": 0.9}).fim
    tok = ByteTokenizer(fim=True)
    assert pack(docs, tok, spec, 3).tolist() == pack(docs, tok, spec, 3).tolist()
    assert pack(docs, tok, spec, 3).tolist() != pack(docs, tok, spec, 4).tolist()


def test_a_tokenizer_file_without_fim_tokens_is_refused_naming_the_field(tmp_path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "</s>": 1}, "a"))
    path = tmp_path / "tok.json"
    model.save(str(path))
    assert HFTokenizer(str(path)).fim_sentinels() is None
    with pytest.raises(WorkerError, match=r"data\.fim needs the tokenizer to have the tokens"):
        load_tokenizer(str(path), fim=True)


@pytest.mark.parametrize(
    ("fim", "field"),
    [
        ({"rate": 1.5}, "data.fim.rate"),
        ({"spmRate": -0.1}, "data.fim.spmRate"),
        ({"rate": 0.5, "psm": 1}, "data.fim.psm"),
    ],
)
def test_bad_fim_settings_are_refused_naming_the_field(fim: dict, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        PretrainConfig.model_validate({"data": {"fim": fim}})
    paths = [path for path, _ in describe_errors(e.value.errors())]
    assert paths == [field]
