"""Parsing the engine's JSON-lines stream, including malformed lines and chunked input."""

from __future__ import annotations

from qgis_plugin.progress_stream import DoneEvent, ErrorEvent, MalformedLine, OtherEvent, ProgressEvent, parse_line


def test_known_events() -> None:
    assert parse_line('{"event":"progress","done":3,"total":12,"eta_s":4.5}') == ProgressEvent(3, 12, 4.5)
    assert parse_line('{"event":"progress","done":3,"total":12,"eta_s":4.5}').percent == 25.0
    done = parse_line('{"event":"done","outputs":{"raster":"/a.tif","vector":null},"classes":[{"id":0}]}')
    assert isinstance(done, DoneEvent)
    assert done.outputs == {"raster": "/a.tif"}
    assert done.classes == [{"id": 0}]
    assert parse_line('{"event":"error","message":"boom","hint":"try cpu"}') == ErrorEvent("boom", "try cpu")
    training = parse_line('{"event":"progress","done":2,"total":300,"iteration":2,"loss":0.568,"lr":0.0005,"eta_s":9}')
    assert training == ProgressEvent(2, 300, 9.0)  # the extra fields ride along in raw, not compared
    assert (training.raw["iteration"], training.raw["loss"]) == (2, 0.568)


def test_malformed_lines_are_reported_not_raised() -> None:
    assert parse_line("   ") is None
    for text in (
        "Traceback (most recent call last):",
        "[1, 2]",
        '{"kind":"progress"}',
        '{"event":"progress"}',
        '{"event":"progress","done":"x","total":2}',
        '{"event":"done","outputs":[1]}',
    ):
        event = parse_line(text)
        assert isinstance(event, MalformedLine), text
        assert event.text == text.strip()


def test_other_events_are_kept_apart_from_malformed_lines() -> None:
    assert parse_line('{"event":"start","total":9}') == OtherEvent("start", {"event": "start", "total": 9})


def test_line_splitter_joins_chunks_and_flushes_tail() -> None:
    from qgis_plugin.progress_stream import LineSplitter

    splitter = LineSplitter()
    assert splitter.feed(b'{"event":"prog') == []
    assert splitter.feed(b'ress","done":1,"total":2}\n{"ev') == ['{"event":"progress","done":1,"total":2}']
    assert splitter.feed('ent":"error","message":"é"}'.encode()) == []
    assert splitter.flush() == ['{"event":"error","message":"é"}']
    assert splitter.flush() == []
