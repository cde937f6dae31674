"""What the risk-limit tests share: a calibrator artifact, certificates made by the real
``basguard calibrate certify``, tenants with a limit, and requests at a chosen confidence.

The calibrator is the identity on ``token_prob``: a one-token answer whose logprob is ``ln p``
is decided at exactly ``p``, so a test can ask just above or below a certified threshold.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

import openai

from calibrators.artifact import FittedCalibrator, save_artifact
from calibrators.certificate import RiskCertificate, load_certificate
from calibrators.methods import IdentityCalibrator
from calibrators.signals import ScoreKind, ScoreSpec
from proxy.cli.main import main
from tests.support.gateway import TENANT_KEYS, gateway_config

__all__ = ["LIMITED_KEY", "ask", "certify", "identity_calibrator", "labelled_data",
           "limited_config"]

LIMITED_KEY = "key-limited-0123456789abcdef"
"""The API key of the tenant ``limited`` that :func:`limited_config` adds."""


def identity_calibrator(path: Path) -> FittedCalibrator:
    """An identity calibrator on ``token_prob``, saved at ``path``: P(correct) = token_prob."""
    calibrator = FittedCalibrator(
        estimator=IdentityCalibrator(), features=(ScoreSpec("token_prob", ScoreKind.PROBABILITY),))
    save_artifact(calibrator, path)
    return calibrator


def labelled_data(path: Path, *, rows: int, seed: int, low: float = 0.5) -> Path:
    """``rows`` answers whose token_prob is calibrated (correct with probability p), p on a
    0.01 grid in ``[low, 1)``: what certification reads."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for _ in range(rows):
            p = rng.randrange(round(100 * low), 100) / 100
            out.write(json.dumps({"token_prob": p, "correct": rng.random() < p}) + "\n")
    return path


def certify(calibrator: Path, data: Path, output: Path, *, max_error_rate: float,
            confidence: float, seed: int = 0) -> RiskCertificate:
    """Run ``basguard calibrate certify`` and load the certificate it wrote."""
    status = main(["calibrate", "certify", str(calibrator), str(data), "--label", "correct",
                   "--max-error-rate", str(max_error_rate), "--confidence", str(confidence),
                   "--seed", str(seed), "-o", str(output)])
    assert status in (0, 1), status  # 1: nothing certified, the certificate says so
    return load_certificate(output)


def limited_config(upstream_url: str, calibrator: str, *, certificates: dict[str, Any] | None,
                   max_error_rate: float = 0.1, confidence: float = 0.9,
                   threshold: float = 0.5, **policy: Any) -> dict[str, Any]:
    """The test gateway's config plus a tenant ``limited`` with a risk limit (paths relative
    to the config's directory)."""
    config = gateway_config(upstream_url)
    risk: dict[str, Any] = {"threshold": threshold, "max_error_rate": max_error_rate,
                            "confidence": confidence}
    if certificates is not None:
        risk["certificates"] = certificates
    if "on_breach" in policy:
        risk["on_breach"] = policy.pop("on_breach")
    config["tenants"]["limited"] = {
        "api_keys": [{"sha256": hashlib.sha256(LIMITED_KEY.encode()).hexdigest()}], "risk": risk,
        "calibrators": {"default": calibrator}, **policy,
    }
    return config


def ask(client: openai.OpenAI, p: float, *, content: str = "Paris",
        model: str = "fake") -> tuple[Any, dict[str, str]]:
    """A chat completion whose one-token answer has confidence ``p``: (its body, headers)."""
    directive = {"fake": {"content": content, "logprobs": [math.log(p)]}}
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": json.dumps(directive)}])
    return raw.parse(), dict(raw.headers)


assert "limited" not in TENANT_KEYS  # the helper's tenant is its own
