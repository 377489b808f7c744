"""Training text: tokenizers, corpora, packing and deterministic rank-sharded sampling.

A corpus is a list of documents; each split (train, held-out) is packed into one token stream
with EOS between documents and cut into windows of seq_len + 1 tokens (inputs and shifted
targets). The sampler walks an endless sequence of per-epoch permutations of those windows,
so its whole state is one integer, `consumed` (global sequences drawn), which the checkpoint
stores. Rank r of W takes its slice of each global micro-batch, so the same global batches are
seen whatever the world size. `packing: repository` makes one document of each package
(`repository_packing.py`), `upsampleLong` repeats long training documents, and a staged run
mixes several corpora by weight (`mixture.py`), each read through `build_corpus`.
"""

from __future__ import annotations

import glob
import os
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from carina.workloads.alignment import instructions, safety
from carina.workloads.config import (
    BYTE_VOCAB,
    DataSource,
    DataSpec,
    ExitCode,
    FimSpec,
    Packing,
)
from carina.workloads.errors import WorkerError
from carina.workloads.file_reading import read_file, take_bytes
from carina.workloads.fim import FIM_TOKENS, Sentinels, apply_fim
from carina.workloads.passkey import passkey_documents
from carina.workloads.repository_packing import repository_documents, upsample_long

# The stdlib corpus is ~100 MB of source; a default cap keeps startup to seconds.
DEFAULT_STDLIB_MAX_BYTES = 32 * 1024 * 1024
SYNTHETIC_DOCUMENTS = 2000


# ---------------------------------------------------------------- tokenizers


class Tokenizer(Protocol):
    """What training and generation need from a tokenizer."""

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str | bytes) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes 0-255 plus BOS 256, EOS 257, PAD 258, SEP 259: no download, no unknowns.

    With `fim`, ids 260-263 are the fill-in-the-middle sentinels (prefix, middle, suffix,
    end) and the vocabulary is 264; no text encodes to them. Without, it stays 260, so
    checkpoints trained before the sentinels existed load and evaluate as they did.
    """

    vocab_size = BYTE_VOCAB
    bos_id, eos_id, pad_id, sep_id = 256, 257, 258, 259
    FIM_SENTINELS = Sentinels(prefix=260, middle=261, suffix=262, end=263)

    def __init__(self, fim: bool = False) -> None:
        self.vocab_size = BYTE_VOCAB + len(FIM_TOKENS) if fim else BYTE_VOCAB

    def fim_sentinels(self) -> Sentinels | None:
        """The FIM sentinel ids, or None when this vocabulary has none."""
        return self.FIM_SENTINELS if self.vocab_size > self.FIM_SENTINELS.end else None

    def encode(self, text: str | bytes) -> list[int]:
        """Token ids of `text` (its UTF-8 bytes)."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return list(data)

    def encode_array(self, data: bytes) -> np.ndarray:
        """Token ids of raw bytes as an int32 array (fast path for large corpora)."""
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`; special tokens are dropped, invalid UTF-8 replaced."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face `tokenizers` JSON file (the package is imported only when used)."""

    def __init__(self, path: str) -> None:
        try:
            from tokenizers import Tokenizer as _HFTokenizer
        except ImportError as e:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                f"data.tokenizer is a file ({path}) but the 'tokenizers' package is not "
                "installed in this image; use tokenizer 'bytes' or add 'tokenizers'",
            ) from e
        if not os.path.isfile(path):
            raise WorkerError(ExitCode.NO_INPUT, f"data.tokenizer: no such file {path}")
        try:
            self._tok = _HFTokenizer.from_file(path)
        except Exception as e:  # the library raises a bare Exception on a bad file
            raise WorkerError(ExitCode.BAD_DATA, f"data.tokenizer: cannot load {path}: {e}") from e
        self.vocab_size = self._tok.get_vocab_size()
        special = {t: self._tok.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "<|endoftext|>")}
        eos = next((special[t] for t in ("</s>", "<|endoftext|>") if special[t] is not None), None)
        self.eos_id = eos if eos is not None else self.vocab_size - 1
        self.bos_id = special["<s>"] if special["<s>"] is not None else self.eos_id
        self.pad_id = special["<pad>"] if special["<pad>"] is not None else self.eos_id

    def fim_sentinels(self) -> Sentinels | None:
        """The FIM sentinel ids (<fim_prefix>, <fim_middle>, <fim_suffix>, <fim_end> or EOS)."""
        prefix, middle, suffix, end = (self._tok.token_to_id(t) for t in FIM_TOKENS)
        if prefix is None or middle is None or suffix is None:
            return None
        return Sentinels(prefix, middle, suffix, end if end is not None else self.eos_id)

    def encode(self, text: str | bytes) -> list[int]:
        """Token ids of `text`."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_many(self, docs: list[bytes]) -> list[list[int]]:
        """Token ids of many documents (the library tokenizes them in parallel)."""
        texts = [d.decode("utf-8", errors="replace") for d in docs]
        return [list(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`."""
        return str(self._tok.decode(ids))


def load_tokenizer(name: str, fim: bool = False) -> ByteTokenizer | HFTokenizer:
    """'bytes' or the path of a tokenizers JSON file; `fim`: one that has FIM sentinels."""
    tokenizer = ByteTokenizer(fim=fim) if name == "bytes" else HFTokenizer(name)
    if fim and tokenizer.fim_sentinels() is None:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"data.fim needs the tokenizer to have the tokens {', '.join(FIM_TOKENS[:3])}"
            f" ({name} has not)",
        )
    return tokenizer


# ---------------------------------------------------------------- corpora


def stdlib_files() -> list[Path]:
    """The standard library's *.py files in a fixed order (site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)


def resolve_paths(patterns: list[str]) -> list[Path]:
    """Files named by `patterns` (globs, ** allowed), sorted and without duplicates."""
    found: set[Path] = set()
    for pattern in patterns:
        matches = glob.glob(os.path.expanduser(pattern), recursive=True)
        files = [Path(m) for m in matches if os.path.isfile(m)]
        if not files:
            raise WorkerError(ExitCode.NO_INPUT, f"data.paths: nothing matches {pattern!r}")
        found.update(files)
    return sorted(found)


def read_documents(paths: list[Path], max_bytes: int | None) -> list[bytes]:
    """Raw bytes of each file in order, stopping once `max_bytes` have been read."""
    return take_bytes((read_file(path) for path in paths), max_bytes)


def synthetic_documents(seed: int, n: int = SYNTHETIC_DOCUMENTS) -> list[bytes]:
    """Deterministic, learnable text: lines of small sums (`12+7=19`), one document per 8."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(8):
            a, b = rng.randrange(100), rng.randrange(100)
            lines.append(f"{a}+{b}={a + b}")
        docs.append(("\n".join(lines) + "\n").encode())
    return docs


def load_documents(spec: DataSpec, seed: int) -> list[bytes]:
    """The documents of `spec.source`, in a deterministic order."""
    source = DataSource(spec.source)
    if source == DataSource.SYNTHETIC:
        docs = synthetic_documents(seed)
        return read_capped(docs, spec.max_bytes)
    if source == DataSource.PYTHON_STDLIB:
        if spec.packing == Packing.REPOSITORY:  # one document per package
            return repository_documents(stdlib_files(), spec.max_bytes or DEFAULT_STDLIB_MAX_BYTES)
        return read_documents(stdlib_files(), spec.max_bytes or DEFAULT_STDLIB_MAX_BYTES)
    if source == DataSource.INSTRUCTIONS:
        pairs = instructions.generate(SYNTHETIC_DOCUMENTS, seed)
        return read_capped([p.render().encode() for p in pairs], spec.max_bytes)
    if source == DataSource.SAFETY:
        # The training split only: the held-out prompts are the safety evaluation's.
        train, _ = safety.split(safety.load_safety_set())
        return read_capped([ex.render().encode() for ex in train], spec.max_bytes)
    if source == DataSource.PASSKEY:
        return read_capped(passkey_documents(seed, SYNTHETIC_DOCUMENTS), spec.max_bytes)
    if spec.packing == Packing.REPOSITORY:
        return repository_documents(resolve_paths(spec.paths or []), spec.max_bytes)
    return read_documents(resolve_paths(spec.paths or []), spec.max_bytes)


def read_capped(docs: list[bytes], max_bytes: int | None) -> list[bytes]:
    """The leading documents that fit in `max_bytes`."""
    if max_bytes is None:
        return docs
    out, total = [], 0
    for d in docs:
        if total + len(d) > max_bytes:
            break
        out.append(d)
        total += len(d)
    return out


def split_documents(docs: list[bytes], val_fraction: float) -> tuple[list[bytes], list[bytes]]:
    """Every k-th document (k = round(1/val_fraction)) is held out; at least one if any."""
    if val_fraction <= 0 or len(docs) < 2:
        return docs, []
    period = max(2, round(1 / val_fraction))
    held = {i for i in range(len(docs)) if i % period == period - 1} or {len(docs) - 1}
    train = [d for i, d in enumerate(docs) if i not in held]
    val = [d for i, d in enumerate(docs) if i in held]
    return train, val


def pack(
    docs: list[bytes],
    tokenizer: ByteTokenizer | HFTokenizer,
    fim: FimSpec | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One int32 token stream: each document (FIM-rearranged at `fim.rate`) followed by EOS."""
    parts: list[np.ndarray] = []
    eos = np.array([tokenizer.eos_id], dtype=np.int32)
    if isinstance(tokenizer, ByteTokenizer):
        encoded = [tokenizer.encode_array(doc) for doc in docs]
    else:
        encoded = [np.asarray(ids, dtype=np.int32) for ids in tokenizer.encode_many(docs)]
    if fim is not None:
        sentinels = tokenizer.fim_sentinels()
        if sentinels is None:
            raise WorkerError(ExitCode.BAD_CONFIG, "data.fim: the tokenizer has no FIM tokens")
        encoded = apply_fim(encoded, fim.rate, fim.spm_rate, seed, sentinels)
    for ids in encoded:
        parts.extend((ids, eos))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


# ---------------------------------------------------------------- windows and sampling


@dataclass
class Windows:
    """A token stream cut into non-overlapping windows of seq_len + 1 tokens."""

    stream: torch.Tensor  # (N,) int64
    seq_len: int

    def __len__(self) -> int:
        return max(0, (len(self.stream) - 1) // self.seq_len)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, each (len(indices), seq_len)."""
        rows = torch.stack(
            [self.stream[i * self.seq_len : i * self.seq_len + self.seq_len + 1] for i in indices]
        )
        return rows[:, :-1], rows[:, 1:]


class ShardedSampler:
    """Deterministic, resumable sampling of windows, sharded by rank within each micro-batch.

    Global sequence k is window perm_e[k mod n] with e = k div n and perm_e a permutation
    seeded by (seed, e). `consumed` counts global sequences drawn and is the whole state.
    """

    def __init__(self, n_windows: int, seed: int, rank: int, world_size: int) -> None:
        self.n, self.seed, self.rank, self.world = n_windows, seed, rank, world_size
        self.consumed = 0
        self._epoch = -1
        self._perm: list[int] = []

    def _window(self, k: int) -> int:
        epoch = k // self.n
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._epoch = epoch
        return self._perm[k % self.n]

    def next_indices(self, global_micro_batch: int) -> list[int]:
        """This rank's window indices for the next global micro-batch; advances `consumed`."""
        per_rank = global_micro_batch // self.world
        first = self.consumed + self.rank * per_rank
        out = [self._window(k) for k in range(first, first + per_rank)]
        self.consumed += global_micro_batch
        return out

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["consumed"])


@dataclass
class Corpus:
    """Train and held-out windows of one data spec."""

    train: Windows
    val: Windows
    tokenizer: ByteTokenizer | HFTokenizer

    def with_seq_len(self, seq_len: int) -> Corpus:
        """The same token streams cut into windows of another length (a new stage)."""
        return Corpus(
            Windows(self.train.stream, seq_len), Windows(self.val.stream, seq_len), self.tokenizer
        )


def build_corpus(spec: DataSpec, seq_len: int, seed: int) -> Corpus:
    """Read, split, tokenize and pack `spec`; refuse data too small for one batch."""
    tokenizer = load_tokenizer(spec.tokenizer, fim=spec.fim is not None)
    docs = load_documents(spec, seed)
    if not docs:
        raise WorkerError(ExitCode.BAD_DATA, "data: the corpus is empty")
    train_docs, val_docs = split_documents(docs, spec.val_fraction)
    if spec.upsample_long is not None:  # the held-out split keeps each document once
        train_docs = upsample_long(train_docs, spec.upsample_long, seed)
    # FIM on the training split only: the held-out loss stays a left-to-right one.
    train_stream = pack(train_docs, tokenizer, spec.fim, seed)
    train = Windows(torch.from_numpy(train_stream).long(), seq_len)
    val = Windows(torch.from_numpy(pack(val_docs, tokenizer)).long(), seq_len)
    if len(train) == 0:
        raise WorkerError(
            ExitCode.BAD_DATA, f"data: the corpus has fewer than seqLen+1 = {seq_len + 1} tokens"
        )
    return Corpus(train, val, tokenizer)
