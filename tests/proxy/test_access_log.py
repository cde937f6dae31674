"""The access log of ``basguard serve``: one line per request, plain or JSON, off by a setting."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from proxy.http.access_log import StdoutLines
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, openai_only_config, write_config
from tests.support.loopback import serve_process

QUESTION = {"model": "fake", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


def traffic(url: str) -> str:
    """An answered request, a wrong key, a wrong path and a stream; returns the decision id."""
    good = httpx.post(f"{url}/v1/chat/completions", json=QUESTION, timeout=30,
                      headers={"Authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
    assert good.status_code == 200
    wrong_key = httpx.post(f"{url}/v1/chat/completions", json=QUESTION, timeout=30,
                           headers={"Authorization": "Bearer not-a-key-of-anyone-here"})
    assert wrong_key.status_code == 401
    assert httpx.get(f"{url}/nothing", timeout=30).status_code == 404
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**QUESTION, "stream": True},
                      timeout=30, headers={"Authorization":
                                           f"Bearer {TENANT_KEYS['annotator']}"}) as stream:
        assert stream.status_code == 200 and b"[DONE]" in b"".join(stream.iter_bytes())
    return str(good.headers["x-basguard-id"])


def serve_and_log(tmp_path: Path, upstream_url: str, setting: str | None) -> tuple[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp_path, openai_only_config(upstream_url))
    env = {"FAKE_UPSTREAM_KEY": "sk-x",
           **({"BASGUARD_ACCESS_LOG": setting} if setting is not None else {})}
    with serve_process(["--config", str(path), "--store", str(tmp_path / "d.sqlite3")],
                       env=env, log=tmp_path / "server.log") as server:
        server.wait_ready()
        decision_id = traffic(server.url)
        assert server.stop() == 0, server.output()
        return server.output(), decision_id


@pytest.mark.parametrize("setting", [None, "plain", "true"])
def test_every_request_gets_one_plain_line_by_default(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, setting: str | None
) -> None:
    output, decision_id = serve_and_log(tmp_path, fake_upstream[1], setting)
    lines = [line for line in output.splitlines() if '"POST /v1/' in line or '"GET /nothing' in line]
    assert len(lines) == 4, output
    answered, refused, missing, streamed = lines
    assert ' 127.0.0.1 "POST /v1/chat/completions" 200 ' in answered
    assert answered.endswith(f" tenant=enforcer decision=answer id={decision_id}")
    assert refused.endswith(' "POST /v1/chat/completions" 401 ' + refused.split(" 401 ")[1])
    assert refused.endswith(" error=invalid_api_key") and "tenant=" not in refused
    assert '"GET /nothing" 404 ' in missing and missing.endswith(" error=not_found")
    # annotate streams its decision in the last event: the headers name only the tenant.
    assert " 200 " in streamed and streamed.endswith(" tenant=annotator")
    assert TENANT_KEYS["enforcer"] not in output and "What is 2 + 2" not in output
    assert '"GET /healthz" 200 ' in output  # the readiness polls: every request is a line


def test_json_lines_parse_and_off_writes_none(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    output, decision_id = serve_and_log(tmp_path / "json", fake_upstream[1], "json")
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    v1 = [r for r in records if r["path"] != "/healthz"]
    assert [(r["method"], r["status"], r["tenant"], r["decision"], r["error"]) for r in v1] == [
        ("POST", 200, "enforcer", "answer", None),
        ("POST", 401, None, None, "invalid_api_key"),
        ("GET", 404, None, None, "not_found"),
        ("POST", 200, "annotator", None, None),
    ]
    assert v1[0]["id"] == decision_id and v1[0]["client"] == "127.0.0.1"
    assert all(r["duration_ms"] > 0 and r["bytes"] > 0 for r in v1)
    assert all(set(r) == {"time", "client", "method", "path", "status", "duration_ms", "bytes",
                          "tenant", "decision", "id", "error"} for r in records)
    quiet, _ = serve_and_log(tmp_path / "off", fake_upstream[1], "off")
    assert "/v1/chat/completions" not in quiet and "/healthz" not in quiet


@pytest.mark.parametrize(("given", "read"), [
    ("plain", "plain"), ("JSON", "json"), ("off", "off"), ("true", "plain"), ("false", "off"),
    ("0", "off"), (True, "plain"), (False, "off"),
])
def test_the_setting_reads_its_old_yes_no_form(given: object, read: str, tmp_path: Path) -> None:
    from proxy.runtime.settings import ServerSettings

    assert ServerSettings(config=tmp_path / "c.yaml", access_log=given).access_log == read  # type: ignore[arg-type]


def test_an_unknown_access_log_format_fails_the_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from proxy.runtime.settings import ServerSettings

    with pytest.raises(ValidationError, match="access_log"):
        ServerSettings(config=tmp_path / "c.yaml", access_log="loud")  # type: ignore[arg-type]


def test_lines_written_in_one_loop_turn_go_out_together_and_in_order(
        capsys: pytest.CaptureFixture[str]) -> None:
    sink = StdoutLines()
    sink("outside a loop: at once")
    assert capsys.readouterr().out == "outside a loop: at once\n"

    async def one_turn() -> str:
        for index in range(3):
            sink(f"line {index}")
        held = capsys.readouterr().out  # nothing yet: the flush waits for the turn's end
        await asyncio.sleep(0)
        return held

    assert asyncio.run(one_turn()) == ""
    assert capsys.readouterr().out == "line 0\nline 1\nline 2\n"
