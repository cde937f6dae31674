"""The store's command line with too few labels: no drift verdict, no calibrator."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli.main import main
from proxy.cli.store import MIN_DRIFT_LABELS
from proxy.store import DecisionStore
from tests.support.decision_store import record


def labelled_store(path: Path, labels: list[bool], *, confidence: float = 0.9) -> Path:
    store = DecisionStore(path, retention_seconds=None)
    for i in range(len(labels)):
        store.decided(record(f"bg-{i}", confidence + 0.001 * (i % 7), created_at=1.0 + i))
    for i, correct in enumerate(labels):
        store.label_now("acme", f"bg-{i}", 0, correct)
    store.close()
    return path


def test_drift_after_a_single_label_is_not_enough_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = labelled_store(tmp_path / "d.sqlite3", [False])
    assert main(["drift", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"not enough labels (fewer than {MIN_DRIFT_LABELS}): no verdict" in out
    assert "DRIFT" not in out
    # The same window is drift once the user accepts one label as enough.
    assert main(["drift", "--store", str(store), "--min-labels", "1"]) == 1
    assert "DRIFT: overconfident" in capsys.readouterr().out


def test_drift_gives_a_verdict_from_the_minimum_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = labelled_store(tmp_path / "d.sqlite3", [False] * MIN_DRIFT_LABELS)
    assert main(["drift", "--store", str(store)]) == 1
    out = capsys.readouterr().out
    assert "DRIFT: overconfident" in out and "not enough labels" not in out


def test_fit_from_store_refuses_seven_labels_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = labelled_store(tmp_path / "d.sqlite3", [True, False] * 3 + [True])
    out_path = tmp_path / "cal.json"
    status = main(["calibrate", "fit", "--from-store", str(store), "--tenant", "acme",
                   "--model", "m", "-o", str(out_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert ("too little labelled data to fit a calibrator: 7 labelled rows (at least 30 "
            "needed); 4 groups with a correct answer (at least 5 needed); 3 groups with a wrong "
            "answer (at least 5 needed)") in err, err
    assert err.count("\n") == 1
    assert not out_path.exists()
