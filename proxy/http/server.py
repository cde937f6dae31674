"""Run the gateway under uvicorn: one process or several workers, limits, and a draining stop.

Both paths use :class:`GatewayServer` with :class:`~proxy.http.protocol.GatewayHttpProtocol`,
so the head limits, the enveloped protocol errors and the graceful stop apply in every worker.

A stop (SIGTERM or SIGINT) drains: the listening socket closes, idle connections close,
in-flight requests and streams run on for ``shutdown_grace_seconds``; streams still open then
get one ``shutting_down`` error event and ``[DONE]``; the app's lifespan shutdown flushes the
decision store; the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import resource
import secrets
import signal
import socket
import tempfile
from pathlib import Path
from types import FrameType

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from proxy.http.listening import bind_listening_socket
from proxy.http.parent_watch import parent_gone, signal_on_parent_death
from proxy.http.protocol import ConnectionLimits, GatewayServerState, ServerConfig
from proxy.runtime.settings import ServerSettings

__all__ = [
    "PORT_OPTIONS",
    "GatewayServer",
    "log_listening",
    "raise_open_file_limit",
    "serve",
    "server_config",
]

logger = logging.getLogger("uvicorn.error")

PORT_OPTIONS = "--port N or BASGUARD_PORT"
"""How ``serve``'s user moves the server, as a taken port's error says it."""

#: uvicorn's own deadline for in-flight work, past ours: our stream ending fires first and
#: uvicorn's cancellation only catches what ignored it.
_UVICORN_GRACE_MARGIN_SECONDS = 5


class GatewayServer(uvicorn.Server):
    """uvicorn's server, with a grace deadline for open streams and exit status 0 on a stop;
    a worker's (``supervisor_pid`` given) also stops when its supervisor is gone."""

    _loop: asyncio.AbstractEventLoop | None = None
    _drain_timer: asyncio.TimerHandle | None = None

    def __init__(self, config: uvicorn.Config, *, supervisor_pid: int | None = None) -> None:
        super().__init__(config)
        self.server_state = GatewayServerState()
        self._supervisor_pid = supervisor_pid

    async def on_tick(self, counter: int) -> bool:
        # Once a second, like uvicorn's own housekeeping: the guard where PR_SET_PDEATHSIG is not.
        if (counter % 10 == 0 and self._supervisor_pid is not None and not self.should_exit
                and parent_gone(self._supervisor_pid)):
            logger.warning("the supervisor [%d] is gone: stopping this worker",
                           self._supervisor_pid)
            self.handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # uvicorn says where it listens only when it bound the socket itself; ours is bound
        # by bind_listening_socket (a worker's parent says it once for all).
        if sockets and self.started and self.config.workers <= 1:
            log_listening(sockets[0])

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A stop we drained is a clean exit: uvicorn would re-raise the signal after serving,
        # and the process would end "killed by SIGTERM".
        self._captured_signals.clear()
        # Signal handlers run between bytecodes of the loop's own thread: hand over safely.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._start_drain_deadline)

    def _start_drain_deadline(self) -> None:
        if self._drain_timer is not None:
            return
        grace: float = getattr(self.config, "shutdown_grace_seconds", 0.0)
        logger.info("stopping: draining requests and streams for up to %g s", grace)
        self._drain_timer = asyncio.get_running_loop().call_later(grace, self._end_in_flight)

    def _end_in_flight(self) -> None:
        state = getattr(self, "lifespan", None)
        in_flight = state.state.get("in_flight") if state is not None else None
        if in_flight is None:
            return
        ended = in_flight.end_all()
        if ended:
            logger.warning("grace period over: %d request(s) and stream(s) ended with "
                           "shutting_down", ended)


class _GatewayProcess(Process):
    """A worker process that runs :class:`GatewayServer` (uvicorn's runs its plain Server) and
    ends with its supervisor (see :mod:`proxy.http.parent_watch`)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.supervisor_pid = os.getpid()  # pickled to the worker with this object

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        # In the worker, first thing: a supervisor that died while this one was spawned has
        # already missed the signal, so check once by hand after asking for it.
        signal_on_parent_death(signal.SIGTERM)
        if parent_gone(self.supervisor_pid):
            logger.warning("the supervisor [%d] died before this worker started",
                           self.supervisor_pid)
            return
        super().target(sockets)

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GatewayServer(config=self.config, supervisor_pid=self.supervisor_pid)
        return self._server


class _GatewayMultiprocess(Multiprocess):
    """uvicorn's worker supervisor, starting :class:`_GatewayProcess` workers.

    uvicorn's supervisor names its process class directly in four places; these overrides
    are those four, otherwise unchanged.
    """

    def _spawn(self) -> Process:
        process = _GatewayProcess(self.config, self.sockets)
        process.start()
        return process

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self._spawn())

    def restart_all(self) -> None:
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self._spawn()
            if not new_process.wait_until_ready(
                self.config.timeout_worker_healthcheck, self.should_exit
            ):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    logger.error("New child process [%s] was not ready in time; keeping [%s]",
                                 new_process.pid, old_process.pid)
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == uvicorn.config.STARTUP_FAILURE:
                logger.error("Child process [%s] failed to start, stopping the parent process.",
                             process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info("Child process [%s] died", process.pid)
            self.processes[idx] = self._spawn()

    def handle_ttin(self) -> None:
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.processes_num += 1
        self.processes.append(self._spawn())


def log_listening(sock: socket.socket) -> None:
    """uvicorn's own "running on" line, for a socket it did not bind."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft open-file limit to its hard limit; returns (soft, hard).

    Every client connection is a file descriptor; the common default soft limit of 1,024
    lets a thousand idle sockets stop the server from accepting anyone else.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # some sandboxes forbid it: keep what we have
            logger.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft, hard


def server_config(
    settings: ServerSettings, app: object, *, log_level: str = "info"
) -> ServerConfig:
    """uvicorn's configuration for ``app`` (an ASGI app, or a factory's import string)."""
    return ServerConfig(
        app,
        factory=isinstance(app, str),
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=log_level,
        # basguard writes its own, richer line (proxy.http.access_log).
        access_log=False,
        # WebSocket upgrades (the Realtime API's passthrough) with the websockets library's
        # sans-I/O protocol: it supports the denial-response extension, so a refused handshake
        # gets the OpenAI error envelope like any request.
        ws="websockets-sansio",
        ws_max_size=settings.websocket_max_message_bytes,
        lifespan="on",
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        timeout_graceful_shutdown=(
            math.ceil(settings.shutdown_grace_seconds) + _UVICORN_GRACE_MARGIN_SECONDS
        ),
        timeout_worker_healthcheck=settings.worker_healthcheck_timeout_seconds,
        limits=ConnectionLimits(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
            max_connections=settings.max_connections,
            body_timeout_seconds=settings.body_timeout_seconds,
            body_min_rate_bytes_per_second=settings.body_min_rate_bytes_per_second,
            body_rate_window_seconds=settings.body_rate_window_seconds,
        ),
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
    )


def serve(settings: ServerSettings) -> None:
    """Serve until stopped. A bad config raises here, before anything listens."""
    soft, _ = raise_open_file_limit()
    usable = soft // 2
    if settings.max_connections > usable:
        # Each worker has its own descriptor table. Half of it for client connections leaves
        # the other half for upstream connections, the store and logs: past the limit, accept()
        # fails and the server stops answering anyone, which is what the limit is for.
        logger.warning("max_connections %d lowered to %d: half the open-file limit of %d",
                       settings.max_connections, usable, soft)
        settings = settings.model_copy(update={"max_connections": usable})
    if settings.workers > 1:
        _serve_workers(settings)
        return
    from proxy.http.app import create_app

    # Bound first (a taken port is one clear line, with nothing started) but not listening:
    # a bad config still fails before anything answers.
    with bind_listening_socket(settings.host, settings.port, to_change=PORT_OPTIONS) as sock:
        app = create_app(settings)  # a bad config raises PolicyError here: nothing served
        GatewayServer(server_config(settings, app)).run(sockets=[sock])


def _serve_workers(settings: ServerSettings) -> None:
    """Several worker processes on one port, sharing the decision store and the metrics.

    Each worker builds the app from ``BASGUARD_*`` variables, so the settings are passed down
    that way. prometheus-client's multiprocess mode keeps each worker's values in files under
    ``PROMETHEUS_MULTIPROC_DIR``; a scrape of any worker sums them. The directory must be empty
    when the server starts (old files would add a previous run's counts): a given one is
    emptied, else a fresh temporary one is used.
    """
    from proxy.runtime.state import build_runtime

    build_runtime(settings.config)  # a bad config fails here, before any worker starts
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="basguard-metrics-"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # One session secret for every worker: a browser's next request may reach another one.
    os.environ.setdefault("BASGUARD_ADMIN_SESSION_SECRET", secrets.token_hex(32))
    for name, value in settings.model_dump().items():
        if value is None:
            continue  # unset: the worker's default too
        resolved = value.resolve() if isinstance(value, Path) else value
        os.environ[f"BASGUARD_{name.upper()}"] = str(resolved)
    config = server_config(settings, "proxy.http.app:create_app_from_environment")
    sock = bind_listening_socket(settings.host, settings.port, to_change=PORT_OPTIONS)
    log_listening(sock)
    try:
        _GatewayMultiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
