"""What every client test of the matrix shares: the tenants, the scripted questions and the
count of upstream calls a client made for one question.

The gateway (``conftest.py``) serves the fake upstream under two model names: ``fake`` and
``gpt-4o-mini``, the name clients that look a model up in their own tables know (LlamaIndex
refuses a name it does not know; DSPy sends ``response_format`` only to a model it knows
supports it).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.support.fake_upstream import FakeUpstream

CONFIDENT = [-0.01, -0.01, -0.01]
UNSURE = [-3.0, -3.0, -3.0]
MESSAGE = "I won't guess."
CITY_ARGUMENTS = '{"city": "Paris"}'
MODEL = "gpt-4o-mini"

SAMPLED: dict[str, Any] = {"signals": ["consistency"], "timeout_seconds": 20,
           "consistency": {"samples": 3, "temperature": 1.0}}
TENANTS: dict[str, dict[str, Any]] = {
    "enforcer": {},  # the defaults: enforce, withheld_shape auto
    "annotator": {"mode": "annotate"},
    "as-error": {"withheld_shape": "error"},
    "as-content": {"withheld_shape": "content"},
    "refuser": {"abstain_action": "error"},
    # Consistency over samples: a confidence for outputs without logprobs (the Responses API's
    # function calls).
    "sampler": {"confidence": SAMPLED},
    "sampler-as-error": {"confidence": SAMPLED, "withheld_shape": "error"},
}
KEYS = {name: f"key-{name}-0123456789abcdef" for name in TENANTS}

CITY_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}


def question(**fake: Any) -> str:
    """A question the fake upstream answers as ``fake`` scripts it; each question is unique
    (a ``marker``), so the upstream calls it caused can be counted."""
    fake.setdefault("marker", uuid.uuid4().hex)
    return json.dumps({"fake": fake}) + "\nWhere is the Louvre?"


def answer(logprobs: list[float]) -> str:
    return question(content="Paris", logprobs=logprobs)


def json_answer(logprobs: list[float]) -> str:
    return question(content=CITY_ARGUMENTS, logprobs=logprobs)


def city_call(logprobs: list[float]) -> str:
    """Answered with a call of ``City`` whose arguments' tokens have ``logprobs``."""
    return question(tool_calls=[{"name": "City", "arguments": CITY_ARGUMENTS}],
                    logprobs=logprobs)


def marker_of(text: str) -> str:
    return str(json.loads(text.split("\n", 1)[0])["fake"]["marker"])


def upstream_calls(upstream: FakeUpstream, text: str) -> int:
    """How many of the client's requests reached the upstream carrying the question ``text``:
    its retries count, the samples the gateway draws for consistency (at its temperature) do
    not."""
    marker = marker_of(text)
    sampling = SAMPLED["consistency"]["temperature"]
    return sum(marker in json.dumps(received["body"])
               and received["body"].get("temperature") != sampling
               for received in upstream.received)


def case(name: str, run: str, tenant: str, text: str, **extra: Any) -> dict[str, Any]:
    """One case for a client program (environments.run_client): run ``run`` as ``tenant``."""
    return {"name": name, "run": run, "key": KEYS[tenant], "input": text, "model": MODEL,
            **extra}
