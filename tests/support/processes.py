"""Processes a test starts or watches: the offload pool's, a server's children, their exits."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from pathlib import Path

from tests.support.waiting import wait_until

__all__ = ["HEAVY_MODULES", "children", "offload_processes", "wait_until_exited"]

HEAVY_MODULES = ("sklearn", "scipy", "matplotlib", "litellm", "tqdm")
"""Fitting, plotting and translation libraries: the serving path (a worker, an offload process)
must not import them."""


def offload_processes() -> set[int]:
    """The test process's pool processes (the gateways run in its threads)."""
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (any of its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def wait_until_exited(pids: Iterable[int], *, what: str, timeout: float = 60.0) -> None:
    """Wait until every process of ``pids`` has exited and been reaped (its parent saw it die);
    ``what`` names them in the failure."""
    for pid in pids:
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(),  # type: ignore[misc]
                   what=f"{what}: process {pid} to exit", timeout=timeout)
