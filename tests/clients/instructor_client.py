"""instructor as an app uses it, pointed at basguard; run in its own environment
(.venv-clients-instructor: instructor pins jiter, and so an older openai, than the main test
environment). Reads the cases of tests/clients/test_instructor.py as JSON on stdin, prints one
result per case as JSON. instructor's defaults (``max_retries=3``, the openai client's own) are
kept: the tests count the upstream calls each case makes.

The decision is read the way docs/clients.md tells an instructor app to: a
``completion:response`` hook sees every raw completion (answered or withheld) and its
``basguard`` object; a ``completion:error`` hook sees a withheld answer's 422 and its headers.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import instructor
import openai
from pydantic import BaseModel


class City(BaseModel):
    city: str


def decision_of(response: Any) -> str | None:
    extra = getattr(response, "model_extra", None) or {}
    return (extra.get("basguard") or {}).get("decision")


def run(case: dict[str, Any], base_url: str, decisions: list[str | None]) -> Any:
    mode = instructor.Mode(case.get("mode", "tool_call"))
    client = instructor.from_openai(openai.OpenAI(base_url=base_url, api_key=case["key"]),
                                    mode=mode)
    client.on("completion:response", lambda response: decisions.append(decision_of(response)))
    client.on("completion:error", lambda error, **_: decisions.append(
        getattr(getattr(error, "response", None), "headers", {}).get("x-basguard-decision")))
    messages = [{"role": "user", "content": case["input"]}]
    if case["run"] == "chat":  # no response_model: instructor hands back the completion
        completion = client.chat.completions.create(model=case["model"], messages=messages,
                                                    response_model=None)
        return {"content": completion.choices[0].message.content,
                "decision": decision_of(completion)}
    if case["run"] == "partial":  # the streamed structured output
        partials = list(client.chat.completions.create_partial(
            model=case["model"], messages=messages, response_model=City))
        return partials[-1].model_dump() if partials else None
    if mode is instructor.Mode.RESPONSES_TOOLS:
        return client.responses.create(model=case["model"], input=messages,
                                       response_model=City).model_dump()
    return client.chat.completions.create(model=case["model"], messages=messages,
                                          response_model=City,
                                          **case.get("options", {})).model_dump()


def main() -> None:
    spec = json.load(sys.stdin)
    results: dict[str, Any] = {}
    for case in spec["cases"]:
        decisions: list[str | None] = []
        try:
            results[case["name"]] = {"value": run(case, spec["base_url"], decisions)}
        except Exception as error:  # what the app would catch: reported, not raised
            cause = error.__cause__
            results[case["name"]] = {"error": {
                "type": type(error).__name__, "message": str(error)[:500],
                "cause": type(cause).__name__ if cause else None,
                "cause_message": str(cause)[:500] if cause else None}}
        results[case["name"]]["decisions"] = decisions
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
