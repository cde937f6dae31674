"""``basguard demo`` serves through the gateway's own server: its limits and its draining stop.

The demo's model is swapped for the fake upstream through ``serve_demo``'s ``model_server``
seam (the real one, SmolLM2 under llama.cpp, is covered by test_local_model.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from proxy.tools.demo import DEMO_KEYS
from tests.support.loopback import free_port
from tests.support.waiting import wait_until

REPOSITORY = Path(__file__).resolve().parents[2]

DEMO_WITH_A_FAKE_MODEL = """
import sys
from contextlib import contextmanager

from proxy.tools.demo import serve_demo
from tests.support.fake_upstream import FakeUpstream
from tests.support.loopback import serve_in_thread


@contextmanager
def fake_model(log):
    with serve_in_thread(FakeUpstream(record=False).app()) as url:
        yield url + "/v1"


serve_demo("127.0.0.1", int(sys.argv[1]), model_server=fake_model)
"""


def test_the_demo_has_the_head_limit_and_drains_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    with log.open("wb") as output:
        # The demo writes its files in its working directory; `tests` is imported from the
        # repository, which an installed package does not put on the path.
        process = subprocess.Popen([sys.executable, "-c", DEMO_WITH_A_FAKE_MODEL, str(port)],
                                   cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                       filter(None, [str(REPOSITORY),
                                                     os.environ.get("PYTHONPATH")]))})
    try:
        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

        wait_until(ready, what="the demo to serve", timeout=120, interval=0.1,
                   output=log.read_text, ignoring=(httpx.HTTPError,))

        reply = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                           headers={"authorization": f"Bearer {DEMO_KEYS['explorer']}"},
                           json={"model": "smollm2",
                                 "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200, reply.text
        decision_id = reply.json()["basguard"]["id"]

        # A plain uvicorn.Server reads any header size; the gateway's server refuses it (431).
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 200_000
                         + b"\r\n\r\n")
            head = sock.recv(200)
        assert head.startswith(b"HTTP/1.1 431"), head

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        with sqlite3.connect(tmp_path / "basguard-decisions.sqlite3") as db:
            stored = {row[0] for row in db.execute("SELECT id FROM decisions")}
        assert decision_id in stored  # flushed by the draining stop
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
