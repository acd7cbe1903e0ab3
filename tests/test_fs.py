"""``syft_flwr._fs``: durable atomic writes shared by the stores that keep state."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from syft_flwr._fs import write_durable


def test_pieces_are_written_in_order_privately_and_replace_the_old_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "r.reply"  # the folder is created
    write_durable(path, [b"old"])
    write_durable(path, [b"ab", memoryview(b"cd"), b""])
    assert path.read_bytes() == b"abcd"
    if os.name != "nt":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["r.reply"]  # no temp left


def test_the_seal_is_computed_over_the_bytes_as_written(tmp_path: Path) -> None:
    seen: list[bytes] = []

    def seal(digest: bytes) -> bytes:
        seen.append(digest)
        return b"T" * 4

    write_durable(tmp_path / "f", [b"x" * 5, b"y" * 3], seal=seal)
    assert seen == [hashlib.sha256(b"xxxxxyyy").digest()]
    assert (tmp_path / "f").read_bytes() == b"xxxxxyyyTTTT"


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_durable(path, [b"the old state"])

    def pieces():
        yield b"half of the new "
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_durable(path, pieces())
    assert path.read_bytes() == b"the old state"
