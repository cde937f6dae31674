from __future__ import annotations

import pytest

from policies.errors import PolicyError
from policies.located_yaml import MAX_DEPTH, MAX_NODES, compose_located


def problems(text: str) -> list[str]:
    return [str(problem) for problem in compose_located(text, display_name="f.yaml")[1].problems]


def test_data_and_the_line_of_every_key() -> None:
    text = "a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\nlast: true\n"
    data, lines = compose_located(text, display_name="f.yaml")
    assert data == {"a": {"b": 1, "c": ["x", {"d": 2}]}, "last": True}
    assert lines.lines == {
        (): 1, ("a",): 1, ("a", "b"): 2, ("a", "c"): 3,
        ("a", "c", 0): 4, ("a", "c", 1): 5, ("a", "c", 1, "d"): 5, ("last",): 6,
    }
    assert lines.line_of(("a", "c", 1, "missing", "deeper")) == 5
    assert lines.line_of(("nowhere",)) == 1
    assert problems(text) == []


def test_keys_are_names_as_written() -> None:
    data, _ = compose_located("2024: a\nno: b\n1.5: c\n~: d\n", display_name="f.yaml")
    assert data == {"2024": "a", "no": "b", "1.5": "c", "~": "d"}


def test_duplicate_keys_keep_the_first_and_report_the_second() -> None:
    text = "a:\n  b: 1\n  b: 2\n"
    assert compose_located(text, display_name="f.yaml")[0] == {"a": {"b": 1}}
    assert problems(text) == ["f.yaml:3: a.b: duplicate key 'b'"]


def test_merge_keys_follow_the_yaml_spec() -> None:
    text = (
        "base: &base {x: 1, y: 1}\n"
        "more: &more {y: 2, z: 2}\n"
        "one:\n  <<: *base\n  x: 0\n"
        "two:\n  <<: [*more, *base]\n"
    )
    data, lines = compose_located(text, display_name="f.yaml")
    assert data["one"] == {"x": 0, "y": 1}  # written keys win
    assert data["two"] == {"y": 2, "z": 2, "x": 1}  # earlier merges win
    assert lines.line_of(("one", "x")) == 5
    assert lines.line_of(("one", "y")) == 1  # where the merged value was written
    assert problems("a:\n  <<: 3\n") == ["f.yaml:2: a: `<<` merges a mapping or a list of mappings"]


def test_aliases_share_values_and_recursion_is_refused() -> None:
    data, _ = compose_located("a: &v [1, 2]\nb: *v\n", display_name="f.yaml")
    assert data == {"a": [1, 2], "b": [1, 2]}
    assert problems("a: &a\n  b: *a\n") == ["f.yaml:2: a.b: an alias refers to the collection that contains it"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: !!python/object:os.system x\n", "f.yaml:1: a: unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'"),
        ("a: !custom x\n", "f.yaml:1: a: unsupported YAML tag '!custom'"),
        ("a: !!set {x: null}\n", "f.yaml:1: a: unsupported YAML tag 'tag:yaml.org,2002:set'"),
        ("a: !list [1]\n", "f.yaml:1: a: unsupported YAML tag '!list'"),
        ("? [a, b]\n: c\n", "f.yaml:1: a key must be a plain name, not a list or mapping"),
    ],
)
def test_only_safe_yaml_is_read(text: str, problem: str) -> None:
    assert problems(text) == [problem]


def test_alias_expansion_is_bounded() -> None:
    rows = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    with pytest.raises(PolicyError, match=f"expands to more than {MAX_NODES} values"):
        compose_located("\n".join(rows) + "\n", display_name="f.yaml")


def test_a_byte_order_mark_is_ignored() -> None:
    assert compose_located("\ufeffa: 1\n", display_name="f.yaml")[0] == {"a": 1}


def error_of(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        compose_located(text, display_name="f.yaml")
    return caught.value


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # Flow style: one line, nested far past Python's recursion limit.
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", 1),
        # Block style: each level on its own line; the problem is at the first one too deep.
        ("".join(" " * i + "k:\n" for i in range(3000)), MAX_DEPTH),
    ],
    ids=["flow", "block"],
)
def test_nesting_is_bounded_and_located(text: str, line: int) -> None:
    error = error_of(text)
    assert (error.path, error.line) == ("f.yaml", line)
    assert f"nested more than {MAX_DEPTH} levels deep" in error.message


def test_nesting_through_aliases_is_bounded() -> None:
    # Each alias re-enters a collection nested 40 deep: small to write, deep once built.
    deep = "[" * 40 + "1" + "]" * 40
    rows = [f"a0: &a0 {deep}"] + [
        f"a{i}: &a{i} {'[' * 40}*a{i - 1}{']' * 40}" for i in range(1, 40)
    ]
    error = error_of("\n".join(rows) + "\n")
    assert f"nested more than {MAX_DEPTH} levels deep" in error.message
    assert error.line is not None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: 1\nb: " + "9" * 5000 + "\n", "f.yaml:2: b: cannot read this value: Exceeds the limit"),
        ("a: 1\nb: 2024-13-45\n", "f.yaml:2: b: cannot read this value: month must be in 1..12"),
    ],
)
def test_values_python_cannot_hold_are_problems(text: str, problem: str) -> None:
    (found,) = problems(text)
    assert found.startswith(problem)


def test_characters_yaml_refuses_are_located() -> None:
    error = error_of("a: 1\nb: x\x00y\n")
    assert (error.line, error.message) == (
        2, "invalid YAML: unacceptable character #x0000: special characters are not allowed")
