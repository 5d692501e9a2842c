"""The per-user PNG origin key (twosamplers._origin) when several processes make it at once."""

from __future__ import annotations

import multiprocessing
import os

from twosamplers import _origin


def test_a_reader_never_sees_a_half_written_key(tmp_path, monkeypatch):
    """While one process writes the key, another that finds the file must find it complete (a batch's two first
    workers: the one that read an empty key file tagged nothing, CI at 2d1713c)."""
    path = tmp_path / "cfg" / "png-origin.key"
    monkeypatch.setenv("TWOSAMPLERS_KEY_FILE", str(path))
    monkeypatch.setattr(_origin, "_CACHE", {})
    seen = []
    real_write = os.write

    def write_and_look(fd, data):
        seen.append(_origin._read_key(path) if os.path.lexists(path) else "absent")  # another process looks
        return real_write(fd, data)

    monkeypatch.setattr(_origin.os, "write", write_and_look)
    k = _origin.key()
    assert k is not None and len(k) == 32
    assert seen == ["absent"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["png-origin.key"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o600


def _tag_in_fresh_process(path: str, queue) -> None:
    os.environ["TWOSAMPLERS_KEY_FILE"] = path
    _origin._CACHE.clear()
    queue.put(_origin.tag("settings"))


def test_processes_starting_together_share_one_key(tmp_path):
    path = str(tmp_path / "png-origin.key")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_tag_in_fresh_process, args=(path, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    tags = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert None not in tags and len(set(tags)) == 1
    assert sorted(os.listdir(tmp_path)) == ["png-origin.key"]


def test_an_existing_key_is_kept(tmp_path, monkeypatch):
    path = tmp_path / "png-origin.key"
    monkeypatch.setenv("TWOSAMPLERS_KEY_FILE", str(path))
    monkeypatch.setattr(_origin, "_CACHE", {})
    first = _origin.key()
    monkeypatch.setattr(_origin, "_CACHE", {})
    assert _origin._make_key(path) == first  # a process that lost the race reads the winner's key
