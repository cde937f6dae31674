from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibrators.dataset import parse_label, read_calibration_data
from calibrators.errors import DataError
from calibrators.signals import ScoreKind, ScoreSpec, parse_score_spec
from tests.support.shipped_data import NQ_GPT35

PROB = ScoreSpec("p", ScoreKind.PROBABILITY)


def write_lines(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(path: Path, **kwargs: object) -> object:
    options: dict[str, object] = {"scores": [PROB], "label": "y", "group": None, **kwargs}
    return read_calibration_data(path, **options)  # type: ignore[arg-type]


def test_reads_scores_labels_and_dense_groups(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        '{"p": 0.9, "y": 1, "q": "a"}',
        "",
        '{"p": 0.2, "y": false, "q": "b"}',
        '{"p": 1, "y": "true", "q": "a"}',
    )
    data = read_calibration_data(path, scores=[PROB], label="y", group="q")
    assert data.scores[:, 0].tolist() == [0.9, 0.2, 1.0]
    assert data.correct.tolist() == [True, False, True]
    assert data.groups.tolist() == [0, 1, 0]
    assert data.n_groups == 2


def test_without_group_every_row_is_its_own_group(tmp_path: Path) -> None:
    path = write_lines(tmp_path, '{"p": 0.9, "y": 1}', '{"p": 0.1, "y": 0}')
    data = read_calibration_data(path, scores=[PROB], label="y")
    assert data.groups.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"p": 0.5, "y": 1', "malformed JSON"),
        ("[0.5, 1]", "must be a JSON object"),
        ('{"y": 1}', "missing score field 'p'"),
        ('{"p": 0.5}', "missing label field 'y'"),
        ('{"p": 0.5, "y": 2}', "must be 0/1 or true/false, got 2"),
        ('{"p": 0.5, "y": "maybe"}', "must be 0/1 or true/false"),
        ('{"p": 1.5, "y": 1}', "not a probability in [0, 1]"),
        ('{"p": -0.1, "y": 1}', "not a probability in [0, 1]"),
        ('{"p": NaN, "y": 1}', "must be finite"),
        ('{"p": Infinity, "y": 1}', "must be finite"),
        ('{"p": "0.5", "y": 1}', "must be a number"),
        ('{"p": null, "y": 1}', "must be a number, got null"),
        ('{"p": true, "y": 1}', "must be a number"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_lines(tmp_path, '{"p": 0.5, "y": 1}', '{"p": 0.4, "y": 0}', line)
    with pytest.raises(DataError) as caught:
        read(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert message in str(caught.value)
    assert caught.value.line == 3


def test_log_probability_must_not_be_positive(tmp_path: Path) -> None:
    path = write_lines(tmp_path, '{"lp_logprob": 0.3, "y": 1}')
    with pytest.raises(DataError, match=r":1: .*not a log-probability"):
        read(path, scores=[parse_score_spec("lp_logprob")])
    assert read(path, scores=[ScoreSpec("lp_logprob", ScoreKind.REAL)]) is not None


def test_missing_group_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path, '{"p": 0.5, "y": 1}')
    with pytest.raises(DataError, match=r":1: missing group field 'q'"):
        read(path, group="q")


def test_empty_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "", "  ")
    with pytest.raises(DataError, match="no records: the file is empty"):
        read(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the file"):
        read(tmp_path / "absent.jsonl")


def test_single_class_is_refused_without_a_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path, '{"p": 0.5, "y": 1}', '{"p": 0.7, "y": true}')
    data = read_calibration_data(path, scores=[PROB], label="y")
    with pytest.raises(DataError, match=r"data.jsonl: all 2 rows are correct"):
        data.require_both_classes()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, True), (0, False), (1.0, True), (True, True), (False, False), ("TRUE", True),
     ("0", False), (" false ", False), (2, None), ("yes", None), (None, None), ([1], None)],
)
def test_parse_label(value: object, expected: bool | None) -> None:
    assert parse_label(value) is expected


def test_parse_score_spec_defaults_and_overrides() -> None:
    assert parse_score_spec("token_prob") == ScoreSpec("token_prob", ScoreKind.PROBABILITY)
    assert parse_score_spec("mean_logprob").kind is ScoreKind.LOG_PROBABILITY
    assert parse_score_spec("token_count:real").kind is ScoreKind.REAL
    with pytest.raises(ValueError, match="unknown score kind"):
        parse_score_spec("x:percent")


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    first = write_lines(tmp_path, '{"p": 0.5, "y": 1}', '{"p": 0.4, "y": 0}')
    fingerprint = read(first).fingerprint()  # type: ignore[attr-defined]
    assert fingerprint == read(first).fingerprint()  # type: ignore[attr-defined]
    first.write_text('{"p": 0.5, "y": 1}\n{"p": 0.4, "y": 1}\n')
    assert read(first).fingerprint() != fingerprint  # type: ignore[attr-defined]


def test_reads_shipped_real_data() -> None:
    specs = [parse_score_spec(s) for s in ("token_prob", "mean_logprob", "agreement")]
    data = read_calibration_data(NQ_GPT35, scores=specs, label="correct", group="group")
    assert data.n_rows == 15_000
    assert data.n_groups == 1_500
    assert 0.4 < data.correct.mean() < 0.5
    assert np.allclose(np.exp(data.scores[:, 1]), data.scores[:, 0], atol=1e-5)


def test_large_file_is_streamed(tmp_path: Path) -> None:
    # 200k rows: the parsed objects are never all alive at once, so this stays small and quick.
    path = tmp_path / "big.jsonl"
    rng = np.random.default_rng(0)
    with path.open("w") as handle:
        for i, p in enumerate(rng.random(200_000)):
            handle.write(json.dumps({"p": round(float(p), 6), "y": int(i % 3 == 0)}) + "\n")
    data = read_calibration_data(path, scores=[PROB], label="y")
    assert data.n_rows == 200_000
    assert data.scores.nbytes == 200_000 * 8
