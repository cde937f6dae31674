"""A gateway with the ops console, its keys, and traffic to review: what the console's tests
share (the API, security and browser tests, and the screenshot script)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from calibrators.artifact import FittedCalibrator, save_artifact
from calibrators.methods import IdentityCalibrator
from calibrators.signals import ScoreKind, ScoreSpec
from tests.support.gateway import TENANT_KEYS, gateway_config, serve_gateway

ADMIN_KEY = "admin-key-0123456789abcdef"
REVIEWER_KEY = "reviewer-key-0123456789abcdef"
"""A reviewer who sees the tenant ``annotator`` only."""
ADMIN_ENV = "BASGUARD_TEST_ADMIN_KEY"
CALIBRATOR_FILE = "calibrators/enforcer-fake.json"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def console_config(upstream_url: str) -> dict[str, Any]:
    """The tests' gateway config with an ``admin:`` section and a calibrator file of
    ``enforcer``'s own for ``fake`` (so it can be promoted over)."""
    config = gateway_config(upstream_url, admin={
        "api_keys": [{"env": ADMIN_ENV}],
        "reviewers": {"clinic-review": {"api_keys": [{"sha256": digest(REVIEWER_KEY)}],
                                        "tenants": ["annotator"]}},
    })
    config["tenants"]["enforcer"]["calibrators"] = {"models": {"fake": CALIBRATOR_FILE}}
    return config


def write_identity_calibrator(path: Path) -> str:
    """The raw token probability as an artifact (what an uncalibrated tenant serves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_artifact(FittedCalibrator(
        estimator=IdentityCalibrator(), features=(ScoreSpec("token_prob", ScoreKind.PROBABILITY),)),
        path)


@contextmanager
def serve_console(directory: Path, upstream_url: str, **settings: Any) -> Iterator[str]:
    """basguard with the console on loopback; the admin key's variable must be set."""
    write_identity_calibrator(directory / CALIBRATOR_FILE)
    with serve_gateway(directory, console_config(upstream_url), **settings) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_KEY)
REVIEWER = bearer(REVIEWER_KEY)


@dataclass(frozen=True)
class Decided:
    id: str
    confidence: float
    decision: str


def ask(url: str, tenant: str, question: str, *, content: str, logprob: float,
        model: str = "fake") -> Decided:
    """One chat request through the gateway, as the tenant's app sends it."""
    response = httpx.post(
        f"{url}/v1/chat/completions", headers=bearer(TENANT_KEYS[tenant]), timeout=30,
        json={"model": model, "messages": [{"role": "user", "content": json.dumps(
            {"q": question, "fake": {"content": content, "logprobs": [logprob]}})}]})
    assert response.status_code == 200, response.text
    decided = response.json()["basguard"]
    return Decided(decided["id"], decided["confidence"], decided["decision"])


def labelled_traffic(url: str, tenant: str, count: int) -> list[Decided]:
    """``count`` decisions of ``tenant`` spread over the confidence range, each labelled through
    /v1/feedback as an app would: correct with the probability a slightly overconfident model
    has (a deterministic pattern, so a refit has something to correct)."""
    decided = []
    for i in range(count):
        p = 0.05 + 0.9 * i / max(count - 1, 1)
        one = ask(url, tenant, f"question {i}", content=f"answer {i}", logprob=math.log(p))
        correct = (i * 7919) % 100 < 100 * p ** 1.6
        response = httpx.post(f"{url}/v1/feedback", headers=bearer(TENANT_KEYS[tenant]),
                              json={"id": one.id, "correct": correct}, timeout=30)
        assert response.status_code == 200, response.text
        decided.append(one)
    return decided
