"""The fast probes of ``benchmarks/reliability.py --quick``: nothing fails and nothing is lost.

Each test runs the benchmark's own probe (real ``basguard serve`` processes in front of the fake
upstream, on loopback) and asserts its row: zero failures, zero losses. The soak needs ``wrk``
and a minute per worker count, so it stays in the benchmark.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import reliability
from benchmarks.reliability import Lab, Row, Sizes
from tests.support.loopback import ServerProcess

# The reliability probes under load (benchmarks/reliability.py's quick sizes): seconds each.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with reliability.lab(Path(tmp_path_factory.mktemp("reliability")),
                         Sizes.of(quick=True, soak_seconds=None)) as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def shared(lab: Lab) -> Iterator[ServerProcess]:
    """One gateway for the probes that neither stop nor reconfigure it."""
    with lab.gateway("shared") as (server, _, _):
        yield server


def held(row: Row) -> None:
    """Nothing failed and nothing was lost; else the row and its examples say what."""
    assert (row.failures, row.lost) == (0, 0), f"{reliability.table([row])}\n" + "\n".join(
        row.examples)
    assert row.requests > 0


def test_fuzzed_requests_get_no_5xx_and_every_error_in_the_envelope(
        shared: ServerProcess, lab: Lab) -> None:
    held(reliability.probe_fuzz(shared.url, lab.sizes))


def test_every_upstream_fault_is_an_envelope_or_an_error_event_and_done(
        shared: ServerProcess) -> None:
    held(reliability.probe_faults(shared.url))


def test_an_endless_upstream_stream_ends_by_its_deadline_or_size_cap(
        shared: ServerProcess, lab: Lab) -> None:
    held(reliability.probe_endless(shared, lab.sizes))


def test_slowloris_sockets_do_not_stop_legitimate_requests(
        shared: ServerProcess, lab: Lab) -> None:
    held(reliability.probe_slowloris(shared.url, lab.sizes))


def test_huge_headers_do_not_stop_legitimate_requests(shared: ServerProcess, lab: Lab) -> None:
    held(reliability.probe_huge_headers(shared, lab.sizes))


def test_slow_bodies_do_not_stop_legitimate_requests(shared: ServerProcess, lab: Lab) -> None:
    row = reliability.probe_slow_bodies(shared.url, lab.sizes)
    held(row)
    assert "(1100 sockets" in row.probe


def test_a_refusal_before_the_body_was_read_closes_cleanly(
        shared: ServerProcess, lab: Lab) -> None:
    held(reliability.probe_early_refusal(shared.url, lab.sizes))


def test_no_path_spelling_gets_around_the_guard_or_leaves_the_base(lab: Lab) -> None:
    held(reliability.probe_path_spellings(lab))


def test_sigkill_of_the_master_leaves_no_worker_and_a_restart_serves(lab: Lab) -> None:
    held(reliability.probe_master_kill(lab))


def test_sigterm_under_load_loses_no_acknowledged_decision_and_cuts_no_stream(lab: Lab) -> None:
    row = reliability.probe_sigterm(lab)
    held(row)
    assert "exit 0" in row.note


def test_sigkill_under_load_loses_no_acknowledged_decision(lab: Lab) -> None:
    held(reliability.probe_sigkill(lab))


def test_config_edits_under_load_fail_no_request(lab: Lab) -> None:
    row = reliability.probe_reload(lab)
    held(row)
    assert " 0 reloads" not in row.note
