"""One server per state folder: the second claim is refused, naming the first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carina.platform.embedded.state_lock import LOCK_FILE, StateInUse, StateLock


def test_a_second_claim_is_refused_naming_the_holder_and_leaves_its_record(
    tmp_path: Path,
) -> None:
    first = StateLock(tmp_path)
    first.record("http://127.0.0.1:8080")
    record = (tmp_path / LOCK_FILE).read_text()
    with pytest.raises(StateInUse) as refused:
        StateLock(tmp_path)
    assert (refused.value.pid, refused.value.url) == (os.getpid(), "http://127.0.0.1:8080")
    assert f"(pid {os.getpid()}) at http://127.0.0.1:8080" in str(refused.value)
    assert (tmp_path / LOCK_FILE).read_text() == record
    first.release()


def test_a_released_folder_can_be_claimed_again(tmp_path: Path) -> None:
    with StateLock(tmp_path):
        pass
    with StateLock(tmp_path / "new") as again:
        again.record(None)
    StateLock(tmp_path).release()
