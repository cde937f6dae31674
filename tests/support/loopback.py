"""Real servers on loopback: ASGI apps under uvicorn in a thread, or ``basguard serve`` itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import uvicorn

from tests.support.waiting import wait_until

T = TypeVar("T")


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # WebSockets as `basguard serve` has them (the Realtime passthrough and its fake upstream).
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "the test server's thread ended before it started serving"
        return bool(server.started)

    wait_until(started, what="the test server to start", interval=0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m proxy.cli serve ...`` in a subprocess, its output kept for failure messages."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], log: Path,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", *argv, "--port", str(self.port)],
            env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")

    def wait_ready(self, path: str = "/healthz", timeout: float = 120.0) -> float:
        """Poll ``path`` until it answers 200; returns the seconds it took.

        The bound is generous (a loaded 2-core machine starts workers slowly); a server that
        exits or never answers fails with its own output.
        """
        started = time.monotonic()
        self.wait_until(lambda: httpx.get(self.url + path, timeout=2).status_code == 200,
                        what=f"{path} to answer 200", timeout=timeout,
                        ignoring=(httpx.HTTPError,))
        return time.monotonic() - started

    def wait_until(self, predicate: Callable[[], T], *, what: str, timeout: float = 60.0,
                   ignoring: tuple[type[BaseException], ...] = ()) -> T:
        """:func:`~tests.support.waiting.wait_until` while this server runs: it fails at once
        if the server exits, and with the server's output if the time runs out."""

        def running_and() -> T:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode} while "
                                     f"waiting for {what}:\n{self.output()}")
            return predicate()

        return wait_until(running_and, what=what, timeout=timeout, interval=0.05,
                          output=self.output, ignoring=ignoring)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the server did not exit within {timeout} s of {sig}:\n{self.output()}"
            ) from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@contextmanager
def serve_process(
    argv: Sequence[str], *, env: Mapping[str, str], log: Path, port: int | None = None
) -> Iterator[ServerProcess]:
    """A :class:`ServerProcess`, killed if still running when the block ends."""
    server = ServerProcess(argv, env=env, log=log, port=port)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def serve_process_group(
    config: Path, store: Path, log: IO[str], workers: int
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``basguard serve`` in its own process group; yields its URL and process, and SIGKILLs
    the whole group after (uvicorn's workers too, with no chance to clean up)."""
    port = free_port()
    env = {**os.environ, "FAKE_UPSTREAM_KEY": "sk-x", "BASGUARD_RELOAD_INTERVAL_SECONDS": "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port",
         str(port), "--store", str(store), "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.flush()
        return Path(log.name).read_text()

    def ready() -> bool:
        assert process.poll() is None, f"the server exited: {output()}"
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

    try:
        wait_until(ready, what="the server to be ready", timeout=120, interval=0.05,
                   output=output, ignoring=(httpx.HTTPError,))
        yield url, process
    finally:
        kill_process_group(process)


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process`` and every process of its group, and reap it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
