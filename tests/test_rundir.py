"""Atomic files of a run directory: readable by others, strict JSON."""

from __future__ import annotations

import json
import math
import os
import stat

from ssl_bench.store.atomic import atomic_write_json, atomic_write_text


def test_atomic_files_get_the_mode_of_an_ordinary_open(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


def test_json_is_strict_with_non_finite_numbers_as_null(tmp_path):
    atomic_write_json(tmp_path / "s.json", {"loss": math.nan, "terms": [1.0, math.inf, -math.inf], "ok": 2.5})
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert data == {"loss": None, "terms": [1.0, None, None], "ok": 2.5}
