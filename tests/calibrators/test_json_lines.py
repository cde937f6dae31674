"""The one JSON Lines reader: Python's json rule (NaN and ±Infinity read as floats), file:line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibrators.errors import DataError
from calibrators.json_lines import json_objects, parse_json_line

# Integers orjson keeps exact (it reads larger ones as floats, json as ints); every float,
# NaN and the infinities included.
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
objects = st.dictionaries(st.text(max_size=8), values, max_size=5)
# Tests share two cores with other work: generating data may be slow, and that is not a failure.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text made of JSON's tokens and the words around them: mostly not JSON, often nearly.
TOKENS = ['{', '}', '[', ']', ',', ':', '"a"', '"\\ud800"', '1', '-', '0.5', '1e400', 'NaN',
          'Infinity', '-Infinity', 'nan', 'inf', 'null', 'true', ' ', '\t']
near_json = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, NaN equal to NaN, numbers compared as doubles."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and math.isnan(a) \
            else float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@relaxed
@given(values)
def test_what_python_json_writes_reads_back_nan_and_infinity_included(value: Any) -> None:
    assert same(parse_json_line(json.dumps(value).encode()), value)


@relaxed
@given(values)
def test_what_orjson_writes_reads_as_orjson_reads_it(value: Any) -> None:
    line = orjson.dumps(value)  # NaN and the infinities become null
    assert same(parse_json_line(line), orjson.loads(line))


@relaxed
@given(near_json)
def test_a_line_is_read_exactly_as_python_json_reads_it(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            parse_json_line(text.encode())
        return
    assert same(parse_json_line(text.encode()), expected)


@pytest.mark.parametrize(("line", "expected"), [
    (b'{"p": NaN}', math.nan),
    (b'{"p": Infinity}', math.inf),
    (b'{"p": -Infinity}', -math.inf),
    (b'{"p": 1e400}', math.inf),
])
def test_non_finite_numbers_are_read_as_the_floats_they_name(line: bytes, expected: float
                                                             ) -> None:
    assert same(parse_json_line(line)["p"], expected)


@pytest.mark.parametrize("line", [
    b'{"p": nan}', b'{"p": -NaN}', b'{"p": inf}', b'{"p": 0.5',
    b'\xef\xbb\xbf{"p": 1}',  # a byte-order mark: json reads it from bytes, not from UTF-8
    '{"p": 1}'.encode("utf-16"), b'{"p": "\xff"}',
])
def test_anything_else_python_json_does_not_take_from_utf8_text_is_malformed(line: bytes
                                                                             ) -> None:
    with pytest.raises(ValueError):
        parse_json_line(line)


@relaxed
@given(st.lists(objects | st.just("blank"), max_size=8))
def test_objects_come_with_their_line_numbers_blank_lines_skipped(
    tmp_path_factory: pytest.TempPathFactory, lines: list[dict[str, Any] | str]
) -> None:
    path = tmp_path_factory.mktemp("lines") / "records.jsonl"
    path.write_text("".join("  \n" if line == "blank" else json.dumps(line) + "\n"
                            for line in lines), encoding="utf-8")
    expected = [(number, line) for number, line in enumerate(lines, start=1)
                if line != "blank"]
    got = list(json_objects(path))
    assert [number for number, _ in got] == [number for number, _ in expected]
    assert all(same(a, b) for (_, a), (_, b) in zip(got, expected, strict=True))


@pytest.mark.parametrize(("line", "message"), [
    ('{"p": 0.5', "malformed JSON"),
    ('{"p": nan}', "malformed JSON"),
    ("[1, 2]", "each line must be a JSON object"),
    ("NaN", "each line must be a JSON object"),
])
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(f'{{"p": 1}}\n\n{line}\n', encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        list(json_objects(path))
    assert str(caught.value).startswith(f"{path}:3: ")
    assert caught.value.line == 3


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.jsonl: cannot read the file"):
        list(json_objects(tmp_path / "missing.jsonl"))
