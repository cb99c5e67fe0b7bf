"""``db.base.in_chunks``: the slices every ``IN (...)`` query of many ids is split into."""

from __future__ import annotations

from queue_service.db.base import IN_CHUNK, in_chunks


def test_slices_cover_every_value_once_in_order_and_none_is_over_the_bound() -> None:
    for n in (0, 1, IN_CHUNK - 1, IN_CHUNK, IN_CHUNK + 1, 3 * IN_CHUNK + 7):
        values = list(range(n))
        chunks = list(in_chunks(values))
        assert [v for chunk in chunks for v in chunk] == values
        assert all(0 < len(chunk) <= IN_CHUNK for chunk in chunks)
        assert len(chunks) == -(-n // IN_CHUNK)


def test_a_size_of_its_own() -> None:
    assert [list(c) for c in in_chunks("abcde", 2)] == [["a", "b"], ["c", "d"], ["e"]]
