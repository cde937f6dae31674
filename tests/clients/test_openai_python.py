"""The openai Python SDK through basguard: the cell of the client matrix that tests/proxy
(test_structured_outputs.py, test_decision_recipes.py, test_clients.py, test_responses*.py)
leaves open: with the SDK's default retries, a ``withheld_shape: error`` answer is one call
(#21)."""

from __future__ import annotations

import openai
import pytest
from pydantic import BaseModel

from tests.clients.matrix import (
    KEYS,
    MESSAGE,
    MODEL,
    UNSURE,
    city_call,
    json_answer,
    upstream_calls,
)
from tests.support.fake_upstream import FakeUpstream


class City(BaseModel):
    city: str


@pytest.mark.parametrize("forced_tool", [False, True], ids=["response_format", "tool"])
def test_a_422_is_raised_at_once_with_the_default_retries(
    base_url: str, upstream: FakeUpstream, forced_tool: bool
) -> None:
    text = city_call(UNSURE) if forced_tool else json_answer(UNSURE)
    extra = ({"tools": [openai.pydantic_function_tool(City)],
              "tool_choice": {"type": "function", "function": {"name": "City"}}}
             if forced_tool else {"response_format": City})
    with openai.OpenAI(base_url=base_url, api_key=KEYS["as-error"]) as client, \
            pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": text}],
                                      **extra)
    assert caught.value.code == "answer_withheld" and MESSAGE in caught.value.message
    assert caught.value.response.headers["x-basguard-decision"] == "abstain"
    assert upstream_calls(upstream, text) == 1
