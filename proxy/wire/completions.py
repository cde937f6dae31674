"""Legacy completions' wire format: text in ``choices[].text``, logprobs as ``token_logprobs``
and ``top_logprobs``; no refusal field, so a withheld answer is always text."""

from __future__ import annotations

from typing import Any

from proxy.wire.formats import WireFormat
from proxy.wire.logprobs import (
    TokenLogprob,
    tokens_from_completion_logprobs,
)
from proxy.wire.withheld import WithheldShape

__all__ = ["CompletionFormat"]

Json = dict[str, Any]


class CompletionFormat(WireFormat):
    endpoint = "completions"
    chunk_object = "text_completion"
    body_field = "text"
    delta_field = "text"
    body_kind = str
    delta_kind = str

    @staticmethod
    def prompt_text(body: Json) -> str:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            return "\n".join(prompt)
        return ""  # token ids: nothing a reviewer can read

    @staticmethod
    def requested_logprobs(body: Json) -> tuple[bool, int]:
        value = body.get("logprobs")
        return value is not None, int(value or 0)

    @staticmethod
    def ask_for_logprobs(body: Json, top_k: int) -> Json:
        return {**body, "logprobs": max(top_k, int(body.get("logprobs") or 0))}

    @staticmethod
    def tokens(choice: Json) -> list[TokenLogprob] | None:
        return tokens_from_completion_logprobs(choice.get("logprobs"))

    @staticmethod
    def trim_alternatives(logprobs: Json, top_k: int) -> None:
        tops = logprobs.get("top_logprobs")
        if isinstance(tops, list):
            logprobs["top_logprobs"] = [
                dict(sorted(top.items(), key=lambda kv: -kv[1])[:top_k])
                if isinstance(top, dict) else top
                for top in tops
            ]

    @staticmethod
    def replace_text(choice: Json, text: str) -> None:
        choice["text"] = text
        choice["finish_reason"] = "stop"
        choice["logprobs"] = None

    @staticmethod
    def delta_text(chunk_choice: Json) -> str:
        return chunk_choice.get("text") or ""

    @staticmethod
    def delta_logprob_entries(chunk_choice: Json) -> list[Any]:
        logprobs = chunk_choice.get("logprobs") or {}
        tokens, values, tops = (
            logprobs.get("tokens"), logprobs.get("token_logprobs"), logprobs.get("top_logprobs"))
        # Parallel lists, or nothing usable: a malformed entry costs the confidence, not a 500.
        if not isinstance(tokens, list) or not isinstance(values, list):
            return []
        if not isinstance(tops, list):
            tops = [None] * len(values)
        return [
            {"token": t, "logprob": v, "top": top}
            for t, v, top in zip(tokens, values, tops, strict=False)
        ]

    @staticmethod
    def merged_logprobs(entries: list[Any]) -> Json:
        return {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [e["top"] for e in entries],
            "text_offset": [],
        }

    @staticmethod
    def text_chunks(
        base: Json, index: int, text: str, finish_reason: str | None, logprobs: Json | None
    ) -> list[Json]:
        return [
            {**base, "choices": [
                {"index": index, "text": text, "logprobs": logprobs, "finish_reason": None}]},
            {**base, "choices": [
                {"index": index, "text": "", "logprobs": None,
                 "finish_reason": finish_reason or "stop"}]},
        ]

    @staticmethod
    def empty_choice(index: int) -> Json:
        return {"index": index, "text": "", "logprobs": None, "finish_reason": None}

    @staticmethod
    def withhold(choice: Json, shape: WithheldShape) -> None:
        choice["text"] = shape.text
        choice["finish_reason"] = shape.finish_reason
        choice["logprobs"] = None

    @staticmethod
    def withheld_delta(chunk_choice: Json) -> Json | None:
        others = {key: value for key, value in chunk_choice.items()
                  if key not in ("index", "text", "logprobs", "finish_reason")}
        if not others:
            return None
        return {**others, "index": chunk_choice.get("index", 0), "text": "", "logprobs": None,
                "finish_reason": None}

    @staticmethod
    def withheld_chunk_choices(index: int, shape: WithheldShape) -> list[Json]:
        return [
            {"index": index, "text": shape.text, "logprobs": None, "finish_reason": None},
            {"index": index, "text": "", "logprobs": None, "finish_reason": shape.finish_reason},
        ]
