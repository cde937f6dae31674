"""Simon Willison's ``llm`` CLI through basguard: the cells of the client matrix that
tests/proxy/test_clients.py leaves open: a schema (``--schema``, structured output), answered
and withheld under each ``withheld_shape``, and a tool the model chose (``--functions``). llm
has no forced tool call and no Responses API for OpenAI-compatible models (#21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.matrix import (
    CONFIDENT,
    KEYS,
    MESSAGE,
    MODEL,
    UNSURE,
    city_call,
    json_answer,
    upstream_calls,
)
from tests.support.fake_upstream import FakeUpstream

FUNCTIONS = '''
def City(city: str) -> str:
    "Look a city up."
    return "found " + city
'''


def llm(base_url: str, tenant: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``llm`` with basguard as an OpenAI-compatible model (``extra-openai-models.yaml``) that
    supports schemas and tools."""
    home.mkdir(exist_ok=True)
    (home / "extra-openai-models.yaml").write_text(json.dumps([{
        "model_id": "basguard", "model_name": MODEL, "api_base": base_url,
        "api_key_name": "basguard", "supports_schema": True, "supports_tools": True}]))
    (home / "keys.json").write_text(json.dumps({"basguard": KEYS[tenant]}))
    return subprocess.run([sys.executable, "-m", "llm", "-m", "basguard", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "LLM_USER_PATH": str(home)})


@pytest.mark.parametrize("stream", [True, False])
def test_a_schema_answered_and_withheld_per_shape(
    base_url: str, upstream: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    flags = ["--schema", "city str", *(() if stream else ("--no-stream",))]
    answered = llm(base_url, "enforcer", tmp_path / "llm", *flags, json_answer(CONFIDENT))
    assert json.loads(answered.stdout) == {"city": "Paris"}
    # auto: a refusal, which llm does not print: the output is empty, the exit status 0.
    withheld = llm(base_url, "enforcer", tmp_path / "llm", *flags, json_answer(UNSURE))
    assert (withheld.returncode, withheld.stdout.strip()) == (0, "")
    # content: the JSON a schema-reading app can tell apart.
    as_content = llm(base_url, "as-content", tmp_path / "llm", *flags, json_answer(UNSURE))
    assert json.loads(as_content.stdout) == {"basguard_withheld": True, "message": MESSAGE}
    # error: llm prints the 422's message and exits 1, after one call.
    text = json_answer(UNSURE)
    as_error = llm(base_url, "as-error", tmp_path / "llm", *flags, text)
    assert as_error.returncode == 1 and f"422 - {MESSAGE}" in as_error.stderr
    assert upstream_calls(upstream, text) == 1


def test_a_tool_the_model_chose_runs(
    base_url: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    done = llm(base_url, "enforcer", tmp_path / "llm", "--functions", FUNCTIONS, "--td",
               "--no-stream", city_call(UNSURE))
    assert done.returncode == 0, done.stderr
    # --td prints the tool calls (on stderr): the unsure call passed and the tool ran.
    assert "Tool call: City({'city': 'Paris'})\n  found Paris" in done.stderr
    # The fake answers the tool result with its default text: the answer after the call.
    assert done.stdout.strip() == "The answer is 42."
