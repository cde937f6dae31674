"""Real labelled traffic for the policy tools' tests: a gateway on loopback, the openai SDK.

Requests name their segment each way a client can (header, ``metadata``, ``user``, an alias,
an unknown name, nothing), at confidences the fake upstream is scripted to give; about four in
five are then labelled through ``POST /v1/feedback``. What the test sent is kept, so every
figure the tools report can be recomputed here independently of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from proxy.store import DecisionStore
from tests.support.gateway import serve_gateway
from tests.support.waiting import wait_until

OPS_KEY = "key-ops-tenant-0123456789abcdef"
THRESHOLD = (3.0 - 0.2) / (1 + 3.0)  # wrong_answer_cost 3, abstain_cost 0.2: 0.7
WRONG_ANSWER_COST, ABSTAIN_COST = 3.0, 0.2


def ops_config(upstream_url: str) -> dict[str, Any]:
    return {
        "version": 1,
        "models": {"fake": {"base_url": f"{upstream_url}/v1", "model": "fake-model",
                            "timeout_seconds": 5}},
        "tenants": {
            "ops": {
                "api_keys": [{"sha256": hashlib.sha256(OPS_KEY.encode()).hexdigest()}],
                "risk": {"wrong_answer_cost": WRONG_ANSWER_COST, "abstain_cost": ABSTAIN_COST},
                "description": "Support answers for the ops test tenant.",
                "owner": "ops-team@example.com",
                "segments": {"names": ["free", "pro"], "aliases": {"business": "pro"},
                             "min_labels": 10},
            },
        },
    }


@dataclass(frozen=True)
class Sent:
    """One request as the test sent it, and what basguard answered."""

    id: str
    segment: str
    """The segment it should be recorded under, worked out here from the rules."""
    confidence: float
    answered: bool
    correct: bool | None


@dataclass(frozen=True)
class Traffic:
    url: str
    store_path: Path
    config_path: Path
    sent: list[Sent]


# How each request names its segment, and the segment that should come of it.
_CLAIMS: list[tuple[dict[str, Any], str]] = [
    ({"extra_headers": {"x-basguard-segment": "free"}}, "free"),
    ({"metadata": {"segment": "pro"}}, "pro"),
    ({"user": "business"}, "pro"),
    # The header wins over metadata (the default order: header, metadata, user).
    ({"extra_headers": {"x-basguard-segment": "free"}, "metadata": {"segment": "pro"}}, "free"),
    ({"extra_headers": {"x-basguard-segment": "Enterprise-Plus"}}, "other"),
    ({}, "other"),
]


def _confidence(rng: random.Random, segment: str) -> float:
    # The free segment gets less confident answers, so it is withheld more: a real gap.
    low, high = (0.2, 0.85) if segment == "free" else (0.45, 0.99)
    while True:
        p = round(rng.uniform(low, high), 3)
        if abs(p - THRESHOLD) > 0.01:  # clear of the threshold, whatever the float rounding
            return p


@contextmanager
def labelled_traffic(directory: Path, upstream_url: str, *, requests: int = 150,
                     seed: int = 12) -> Iterator[Traffic]:
    """Serve the ``ops`` gateway, send ``requests`` requests, label most; yield what was sent."""
    config = ops_config(upstream_url)
    rng = random.Random(seed)
    with serve_gateway(directory, config) as url, openai.OpenAI(
        base_url=f"{url}/v1", api_key=OPS_KEY, max_retries=0, timeout=30
    ) as client:
        sent = []
        for i in range(requests):
            claim, segment = _CLAIMS[i % len(_CLAIMS)]
            p = _confidence(rng, segment)
            fake = {"content": "an answer", "logprobs": [math.log(p)]}
            response = client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": json.dumps({"q": i, "fake": fake})}],
                **claim)
            decision = (response.model_extra or {})["basguard"]
            correct: bool | None = rng.random() < p  # labels follow the confidence
            if rng.random() < 0.2:
                correct = None
            else:
                client.post("/feedback", body={"id": decision["id"], "correct": correct},
                            cast_to=object)
            sent.append(Sent(decision["id"], segment, decision["confidence"],
                             decision["decision"] == "answer", correct))
        store_path = directory / "decisions.sqlite3"
        wait_until_stored(store_path, "ops", len(sent))
        yield Traffic(url, store_path, directory / "basguard.yaml", sent)


def wait_until_stored(path: Path, tenant: str, count: int) -> None:
    """Poll the store (its own API) until ``count`` decisions of ``tenant`` are written."""

    def stored() -> int:
        store = DecisionStore(path, retention_seconds=None)
        try:
            return len(store.tenant_decisions(tenant))
        finally:
            store.close()

    wait_until(lambda: stored() >= count, what=f"{count} decisions of {tenant!r} stored",
               interval=0.05, output=lambda: f"{stored()} stored")
