"""DSPy through basguard, in the main test environment: a signature's prediction with its
default ChatAdapter, a typed (structured) output, a stream (``streamify``), native tool calls,
the Responses API (``model_type="responses"``), answered and withheld, and the decision in the
LM's history (#21).

DSPy asks for fields written as text (``[[ ## answer ## ]]``): to basguard that is plain text,
withheld as the message, which DSPy cannot parse (AdapterParseError, after a second call with
its JSONAdapter). ``abstain_action: error`` makes a withheld answer DSPy's own
``LMInvalidRequestError`` (status 422, ``request_id`` the decision's id) in one call.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from tests.clients.matrix import (
    CITY_ARGUMENTS,
    CONFIDENT,
    KEYS,
    MESSAGE,
    MODEL,
    UNSURE,
    upstream_calls,
)
from tests.support.fake_upstream import FakeUpstream

dspy = pytest.importorskip("dspy")

FIELDS = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"


class QA(dspy.Signature):  # type: ignore[misc]
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


class City(BaseModel):
    city: str


class Locate(dspy.Signature):  # type: ignore[misc]
    """Name the city."""

    question: str = dspy.InputField()
    place: City = dspy.OutputField()


class UseTools(dspy.Signature):  # type: ignore[misc]
    """Answer with a tool."""

    question: str = dspy.InputField()
    tools: list[dspy.Tool] = dspy.InputField()
    outputs: dspy.ToolCalls = dspy.OutputField()


def scripted(**fake: Any) -> str:
    """A question for DSPy's prompt: the fake reads a chat request's directive as a follow-up
    (the question is quoted inside DSPy's template) and a Responses request's as it is."""
    fake["marker"] = uuid.uuid4().hex  # counts the calls (matrix.upstream_calls)
    return json.dumps({"fake": {**fake, "followup": fake}})


def lm(base_url: str, tenant: str, **options: Any) -> Any:
    return dspy.LM(f"openai/{MODEL}", api_base=base_url, api_key=KEYS[tenant], cache=False,
                   **options)


def decision_in(model: Any) -> str:
    """The decision of the LM's last call, from its history (the provider's JSON body)."""
    return str(model.history[-1]["response"].provider_data["basguard"]["decision"])


@pytest.mark.parametrize("model_type", ["chat", "responses"])
@pytest.mark.parametrize(("logprobs", "decision"), [(CONFIDENT, "answer"), (UNSURE, "abstain")])
def test_a_prediction_and_its_decision_in_the_history(
    base_url: str, upstream: FakeUpstream, model_type: str, logprobs: list[float],
    decision: str,
) -> None:
    tenant = "enforcer" if decision == "answer" else "annotator"  # annotate: passed, flagged
    model = lm(base_url, tenant, model_type=model_type)
    with dspy.context(lm=model):
        prediction = dspy.Predict(QA)(question=scripted(content=FIELDS, logprobs=logprobs))
    assert prediction.answer == "Paris"
    assert decision_in(model) == decision
    if model_type == "responses":
        metadata = model.history[-1]["response"].provider_data["metadata"]
        assert metadata["basguard_decision"] == decision


@pytest.mark.parametrize("model_type", ["chat", "responses"])
def test_a_withheld_prediction_is_a_parse_error_under_the_defaults(
    base_url: str, upstream: FakeUpstream, model_type: str
) -> None:
    question = scripted(content=FIELDS, logprobs=UNSURE)
    model = lm(base_url, "enforcer", model_type=model_type)
    with dspy.context(lm=model), \
            pytest.raises(dspy.utils.exceptions.AdapterParseError) as caught:
        dspy.Predict(QA)(question=question)
    # The ChatAdapter could not parse the message (not an empty answer); its JSON fallback then
    # got the refusal, an empty response to DSPy.
    assert caught.value.__context__.lm_response == MESSAGE
    assert "empty or null response" in str(caught.value)
    # The ChatAdapter's text, then its JSONAdapter fallback (a JSON schema: a refusal).
    assert upstream_calls(upstream, question) == 2
    assert [entry["response"].provider_data["basguard"]["decision"]
            for entry in model.history] == ["abstain", "abstain"]


@pytest.mark.parametrize("signature", [QA, Locate], ids=["text", "typed"])
def test_abstain_action_error_is_one_lm_error_with_the_decision_id(
    base_url: str, upstream: FakeUpstream, signature: Any
) -> None:
    question = scripted(content=FIELDS, logprobs=UNSURE)
    with dspy.context(lm=lm(base_url, "refuser")), \
            pytest.raises(dspy.utils.exceptions.LMInvalidRequestError) as caught:
        dspy.Predict(signature)(question=question)
    assert (caught.value.status, caught.value.provider_code) == (422, "answer_withheld")
    assert caught.value.request_id.startswith("bg-")  # the decision's id, for feedback
    assert MESSAGE in str(caught.value)
    assert upstream_calls(upstream, question) == 1


def test_a_typed_output_with_the_json_adapter(base_url: str, upstream: FakeUpstream) -> None:
    """DSPy's JSONAdapter asks a model that supports it for a JSON schema: withheld, that is a
    refusal, which DSPy reports as an empty response (AdapterParseError), in one call;
    withheld_shape: error makes it LMInvalidRequestError."""
    model = lm(base_url, "enforcer")
    answered = scripted(content=json.dumps({"place": {"city": "Paris"}}), logprobs=CONFIDENT)
    with dspy.context(lm=model, adapter=dspy.JSONAdapter()):
        assert dspy.Predict(Locate)(question=answered).place == City(city="Paris")
    assert decision_in(model) == "answer"
    withheld = scripted(content=json.dumps({"place": {"city": "Paris"}}), logprobs=UNSURE)
    with dspy.context(lm=model, adapter=dspy.JSONAdapter()), \
            pytest.raises(dspy.utils.exceptions.AdapterParseError) as caught:
        dspy.Predict(Locate)(question=withheld)
    assert "empty or null response" in str(caught.value)
    assert upstream_calls(upstream, withheld) == 1
    rejected = scripted(content=json.dumps({"place": {"city": "Paris"}}), logprobs=UNSURE)
    with dspy.context(lm=lm(base_url, "as-error"), adapter=dspy.JSONAdapter()), \
            pytest.raises(dspy.utils.exceptions.LMInvalidRequestError):
        dspy.Predict(Locate)(question=rejected)
    assert upstream_calls(upstream, rejected) == 1


@pytest.mark.parametrize(("logprobs", "answer"), [(CONFIDENT, "Paris"), (UNSURE, None)])
def test_a_streamed_prediction(
    base_url: str, upstream: FakeUpstream, logprobs: list[float], answer: str | None
) -> None:
    program = dspy.streamify(dspy.Predict(QA), stream_listeners=[
        dspy.streaming.StreamListener(signature_field_name="answer")])
    question = scripted(content=FIELDS, logprobs=[logprobs[0]] * 12)

    async def run() -> list[Any]:
        with dspy.context(lm=lm(base_url, "enforcer")):
            return [item async for item in program(question=question)]

    if answer is None:  # withheld: the message, which DSPy cannot parse
        with pytest.raises(dspy.utils.exceptions.AdapterParseError):
            asyncio.run(run())
        return
    items = asyncio.run(run())
    streamed = "".join(item.chunk for item in items
                       if isinstance(item, dspy.streaming.StreamResponse))
    assert streamed.strip() == answer
    assert items[-1].answer == answer


def test_a_native_tool_call_passes(base_url: str, upstream: FakeUpstream) -> None:
    """With native function calling, DSPy lets the model choose (``tool_choice`` auto): the call
    is an action and passes, unsure or not. DSPy has no forced tool call."""

    def city(city: str) -> str:
        """Look a city up."""
        return city

    model = lm(base_url, "enforcer")
    question = scripted(tool_calls=[{"name": "city", "arguments": CITY_ARGUMENTS}],
                        logprobs=UNSURE)
    with dspy.context(lm=model, adapter=dspy.ChatAdapter(use_native_function_calling=True)):
        prediction = dspy.Predict(UseTools)(question=question, tools=[dspy.Tool(city)])
    assert [(call.name, call.args) for call in prediction.outputs.tool_calls] == [
        ("city", {"city": "Paris"})]
    assert decision_in(model) == "not_applicable"
