"""The storage watch's cursor, decided from listings: no storage, no clock of its own."""

from __future__ import annotations

from airflow_batchai.data.watch import MAX_CURSOR_ENTRIES, WINDOW_S, Cursor, StoredObject, advance, baseline

NOW = 1_800_000_000.0


def obj(name: str, modified: float, version: str = "v1") -> StoredObject:
    return StoredObject(name, version, 1, modified)


def test_what_was_there_is_not_reported_and_what_lands_later_is_once() -> None:
    cursor = baseline([obj("old", NOW - 3600), obj("recent", NOW - 5)], NOW)
    new, cursor = advance(cursor, [obj("old", NOW - 3600), obj("recent", NOW - 5), obj("fresh", NOW + 1)], NOW + 2)
    assert [o.name for o in new] == ["fresh"]
    again, _ = advance(cursor, [obj("old", NOW - 3600), obj("recent", NOW - 5), obj("fresh", NOW + 1)], NOW + 3)
    assert again == []


def test_a_write_committed_out_of_order_within_the_window_is_still_seen() -> None:
    cursor = baseline([obj("a", NOW)], NOW)
    new, _ = advance(cursor, [obj("a", NOW), obj("late", NOW - WINDOW_S / 2)], NOW + 1)
    assert [o.name for o in new] == ["late"]


def test_a_file_dated_in_the_future_does_not_silence_the_watch() -> None:
    cursor = baseline([], NOW)
    _, cursor = advance(cursor, [obj("skewed", NOW + 10**7)], NOW)
    assert cursor.watermark <= NOW + 60
    new, _ = advance(cursor, [obj("skewed", NOW + 10**7), obj("next", NOW + 5)], NOW + 5)
    assert [o.name for o in new] == ["next"]


def test_where_half_written_files_are_visible_an_object_is_reported_once_it_held_still() -> None:
    cursor = baseline([], NOW)
    growing = obj("part", NOW + 1, "size-10")
    new, cursor = advance(cursor, [growing], NOW + 1, settled={})
    assert new == []  # first seen: maybe still being written
    new, cursor = advance(cursor, [obj("part", NOW + 2, "size-20")], NOW + 2, settled={"part": "size-10"})
    assert new == []  # it changed since
    new, _ = advance(cursor, [obj("part", NOW + 2, "size-20")], NOW + 3, settled={"part": "size-20"})
    assert [o.version for o in new] == ["size-20"]


def test_the_cursor_stays_small_after_a_burst_and_round_trips_as_json() -> None:
    burst = [obj(f"f{i}", NOW + i / 1000) for i in range(MAX_CURSOR_ENTRIES + 500)]
    cursor = baseline(burst, NOW + 10)
    assert len(cursor.recent) == MAX_CURSOR_ENTRIES and "f0" not in cursor.recent
    assert Cursor.from_json(cursor.to_json()) == cursor and Cursor.from_json("garbage") is None
