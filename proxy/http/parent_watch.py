"""A worker process ends with the process that supervises it.

``basguard serve --workers N`` runs a supervisor (uvicorn's) and N workers sharing one listening
socket. Killed with SIGKILL (a container runtime, the OOM killer), the supervisor cannot stop its
workers: they would serve on, unsupervised, and hold the port against the next start. Two guards,
so that a worker stops within about a second of its supervisor:

- on Linux, the kernel sends the worker SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and
  the worker stops as on any SIGTERM: it closes its listening socket, drains and exits;
- everywhere, the worker's server checks once a second that its parent is still the supervisor
  (an orphan is adopted by another process) and stops the same way if not.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

__all__ = ["parent_gone", "signal_on_parent_death"]

logger = logging.getLogger("uvicorn.error")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def signal_on_parent_death(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send this process ``sig`` when its parent dies; False where it cannot
    (not Linux, or prctl refused): :func:`parent_gone` is then the only guard."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0:
            return True
        error = ctypes.get_errno()
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(error))
    except (OSError, AttributeError) as exc:
        logger.warning("prctl(PR_SET_PDEATHSIG) is unavailable: %s", exc)
    return False


def parent_gone(parent_pid: int) -> bool:
    """Whether the process that started this one has died (this one was adopted)."""
    return os.getppid() != parent_pid
