"""A tenant with a risk limit, served over real sockets: it answers iff p >= max(cost,
certified), says so everywhere, answers nothing while uncertified (loudly), refuses a foreign
certificate at its line, and picks up a new certificate on reload."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from calibrators.certificate import RiskCertificate
from policies.loader import PolicyError
from proxy.cli.main import main
from proxy.runtime.state import build_runtime
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, serve_gateway
from tests.support.metrics import scrape
from tests.support.risk import (
    LIMITED_KEY,
    ask,
    certify,
    identity_calibrator,
    labelled_data,
    limited_config,
)
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A calibrator, a certificate for it (at most 10 % wrong at 90 %), one that certified
    nothing, and one for another calibrator."""
    directory = tmp_path_factory.mktemp("risk")
    identity_calibrator(directory / "cal.json")
    data = labelled_data(directory / "held_out.jsonl", rows=3000, seed=1)
    certify(directory / "cal.json", data, directory / "risk.json", max_error_rate=0.1,
            confidence=0.9)
    few = labelled_data(directory / "few.jsonl", rows=40, seed=2)
    certify(directory / "cal.json", few, directory / "none.json", max_error_rate=0.02,
            confidence=0.99)
    identity_calibrator(directory / "other-cal.json")  # a later creation date: a new version
    certify(directory / "other-cal.json", data, directory / "foreign.json", max_error_rate=0.1,
            confidence=0.9)
    return {"directory": directory, "calibrator": directory / "cal.json",
            "certified": directory / "risk.json", "uncertified": directory / "none.json",
            "foreign": directory / "foreign.json", "data": data}


@pytest.fixture
def certificate(files: dict[str, Path]) -> RiskCertificate:
    from calibrators.certificate import load_certificate

    loaded = load_certificate(files["certified"])
    assert loaded.threshold is not None and 0.6 < loaded.threshold < 0.97
    return loaded


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")


@pytest.fixture
def serve(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
          files: dict[str, Path]) -> Iterator[Any]:
    """``serve(**limit)``: the gateway with the tenant ``limited`` (see ``limited_config``)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        def start(settings: dict[str, Any] | None = None, **limit: Any) -> str:
            config = limited_config(fake_upstream[1], str(files["calibrator"]), **limit)
            return stack.enter_context(serve_gateway(tmp_path, config, **(settings or {})))

        yield start


def test_a_certified_limit_answers_from_the_certified_threshold_and_says_so_everywhere(
    serve: Any, files: dict[str, Path], certificate: RiskCertificate, sdk_client: SDK,
) -> None:
    url = serve(certificates={"default": str(files["certified"])})
    client = sdk_client(f"{url}/v1", LIMITED_KEY)
    t = certificate.threshold
    assert t is not None
    above, headers = ask(client, t + 0.02)
    report = above.model_extra["basguard"]
    assert report["decision"] == "answer" and above.choices[0].message.content == "Paris"
    assert report["threshold"] == t  # max(0.5, t)
    assert report["risk_limit"] == {
        "max_error_rate": 0.1, "confidence": 0.9, "status": "certified",
        "cost_threshold": 0.5, "certified_threshold": t, "labels": certificate.labels,
        "answer_rate": certificate.answer_rate, "certificate": certificate.version,
        "on_breach": "alert"}
    assert report["audited"] is False
    assert headers["x-basguard-threshold"] == f"{t:.4f}"
    assert headers["x-basguard-risk-limit"] == (
        f"status=certified; max_error_rate=0.1; confidence=0.9; certified_threshold={t:.4f}; "
        f"labels={certificate.labels}; answer_rate={certificate.answer_rate:.4f}")
    assert "x-basguard-audit" not in headers
    below, _ = ask(client, t - 0.02)
    assert below.model_extra["basguard"]["decision"] == "abstain"  # above the cost threshold
    assert below.model_extra["basguard"]["choices"][0]["reason"] is None
    # Streamed (buffered in enforce mode) and through the Responses API alike.
    with client.chat.completions.with_streaming_response.create(
            model="fake", stream=True,
            messages=[{"role": "user", "content": _directive(t - 0.02)}]) as raw:
        assert raw.headers["x-basguard-threshold"] == f"{t:.4f}"
        assert "status=certified" in raw.headers["x-basguard-risk-limit"]
        assert "I'm not confident" in raw.read().decode()
    response = client.responses.create(model="fake", input=_directive(t + 0.02))
    assert response.model_extra["basguard"]["threshold"] == t
    assert response.model_extra["basguard"]["decision"] == "answer"
    # The configured limit and certificate, on /metrics.
    metrics = scrape(url)
    key = (("model", "fake"), ("tenant", "limited"))
    assert metrics[("basguard_risk_limit_certified", key)] == 1
    assert metrics[("basguard_risk_limit_max_error_ratio", key)] == 0.1
    assert metrics[("basguard_risk_limit_threshold_ratio", key)] == t
    assert metrics[("basguard_risk_limit_certificate_labels", key)] == certificate.labels
    assert metrics[("basguard_risk_limit_certified_answer_ratio", key)] == certificate.answer_rate
    # No audited label yet: the live bound knows nothing.
    assert metrics[("basguard_risk_limit_error_upper_bound_ratio", key)] == 1
    assert metrics[("basguard_risk_limit_breached", key)] == 0


def _directive(p: float) -> str:
    """The fake upstream's directive for a one-token answer at confidence ``p``."""
    return json.dumps({"fake": {"content": "Paris", "logprobs": [math.log(p)]}})


def test_the_cost_threshold_wins_when_it_is_higher(
    serve: Any, files: dict[str, Path], certificate: RiskCertificate, sdk_client: SDK,
) -> None:
    url = serve(certificates={"default": str(files["certified"])}, threshold=0.985)
    client = sdk_client(f"{url}/v1", LIMITED_KEY)
    assert certificate.threshold is not None and certificate.threshold < 0.97
    between, headers = ask(client, 0.975)
    assert between.model_extra["basguard"]["decision"] == "abstain"
    assert between.model_extra["basguard"]["threshold"] == 0.985
    assert headers["x-basguard-threshold"] == "0.9850"
    assert ask(client, 0.99)[0].model_extra["basguard"]["decision"] == "answer"


def test_without_a_certified_threshold_nothing_is_answered_loudly(
    serve: Any, files: dict[str, Path], sdk_client: SDK, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="basguard.reload")
    url = serve(certificates={"models": {"fake": str(files["uncertified"])}})
    warnings = [r.getMessage() for r in caplog.records if r.name == "basguard.reload"]
    # One warning per model: its own certificate certified nothing, the others have none.
    assert any("certified no threshold on its 40 labels on model 'fake'" in w for w in warnings)
    assert any("without a certificate on model 'keyed'" in w for w in warnings)
    client = sdk_client(f"{url}/v1", LIMITED_KEY)
    sure, headers = ask(client, 0.9999)
    report = sure.model_extra["basguard"]
    assert report["decision"] == "abstain"
    assert "I'm not confident" in sure.choices[0].message.content
    assert "certified no threshold" in report["choices"][0]["reason"]
    assert report["risk_limit"]["status"] == "uncertified"
    assert report["risk_limit"]["certified_threshold"] is None
    assert "status=uncertified" in headers["x-basguard-risk-limit"]
    metrics = scrape(url)
    for model in ("fake", "keyed"):
        key = (("model", model), ("tenant", "limited"))
        assert metrics[("basguard_risk_limit_certified", key)] == 0
        assert ("basguard_risk_limit_threshold_ratio", key) not in metrics
        # Nothing answered: no error rate among answers to watch.
        assert ("basguard_risk_limit_error_upper_bound_ratio", key) not in metrics


def test_policy_check_shows_what_each_certificate_proves(
    files: dict[str, Path], fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
    certificate: RiskCertificate, capsys: pytest.CaptureFixture[str],
) -> None:
    config = limited_config(fake_upstream[1], str(files["calibrator"]),
                            certificates={"default": str(files["certified"])}, audit_rate=0.05)
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "risk limit" in out and "≤ 10% wrong at 90%" in out and "5%" in out
    tested = certificate.tested
    assert (f"limited / fake: at most 10% wrong among the answers with 90% confidence; "
            f"certified threshold {certificate.threshold:.4f} on {certificate.labels} labels "
            f"({tested.answered} of {tested.labels} tested answered, {tested.errors} wrong"
            in out)
    assert f"answer rate {certificate.answer_rate:.1%} on its data" in out
    assert f"answers iff p >= {certificate.threshold:.4f} (cost threshold 0.5000)" in out
    assert f"(version {certificate.version})" in out
    # The same in --json, for scripts and CI.
    assert main(["policy", "check", str(path), "--json"]) == 0
    limit = json.loads(capsys.readouterr().out)["risk_limits"]["limited"]["fake"]
    assert limit == {
        "max_error_rate": 0.1, "confidence": 0.9, "on_breach": "alert", "cost_threshold": 0.5,
        "certified_threshold": certificate.threshold, "threshold": certificate.threshold,
        "labels": certificate.labels, "answer_rate": certificate.answer_rate,
        "certificate": str(files["certified"])}


def _config_lines(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("certificates", "needle", "message"),
    [
        ({"default": "foreign.json"}, "default: foreign.json",
         "certified for calibrator {foreign}, but the tenant's default calibrator is {own}: its "
         "threshold cuts another calibrator's probability"),
        ({"default": "absent.json"}, "default: absent.json", "cannot read the certificate"),
        ({"models": {"elsewhere": "risk.json"}}, "elsewhere: risk.json",
         "`risk: certificates: models:` names 'elsewhere', which is not configured"),
    ],
)
def test_a_certificate_that_cannot_serve_the_limit_is_refused_at_its_line(
    files: dict[str, Path], fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
    certificates: dict[str, Any], needle: str, message: str,
) -> None:
    from calibrators.artifact import load_artifact
    from calibrators.certificate import load_certificate

    for name in ("risk.json", "foreign.json"):
        shutil.copy(files["directory"] / name, tmp_path / name)
    config = limited_config(fake_upstream[1], str(files["calibrator"]), certificates=certificates)
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(PolicyError) as refused:
        build_runtime(path)
    expected = message.format(
        foreign=load_certificate(files["foreign"]).calibrator.version,
        own=load_artifact(files["calibrator"]).version)
    problem = refused.value.problems[0]
    assert expected in problem.message
    assert (problem.path, problem.line) == (str(path), _config_lines(path, needle))


def test_a_looser_certificate_does_not_prove_a_stricter_limit(
    files: dict[str, Path], fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
) -> None:
    config = limited_config(fake_upstream[1], str(files["calibrator"]), max_error_rate=0.05,
                            certificates={"default": str(files["certified"])})
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(PolicyError, match=r"basguard\.yaml:\d+: .*certified at most 10% wrong "
                       r"with 90% confidence, which does not prove the policy's limit of 5% "
                       r"with 90%; certify again with --max-error-rate 0.05 --confidence 0.9"):
        build_runtime(path)
    # A stricter certificate proves a looser limit.
    config = limited_config(fake_upstream[1], str(files["calibrator"]), max_error_rate=0.2,
                            confidence=0.8, certificates={"default": str(files["certified"])})
    path.write_text(yaml.safe_dump(config))
    assert build_runtime(path).tenants["limited"].risk_limits["fake"].certified


def test_a_new_certificate_takes_effect_on_reload(
    serve: Any, files: dict[str, Path], certificate: RiskCertificate, tmp_path: Path,
    sdk_client: SDK,
) -> None:
    live = tmp_path / "live.json"
    shutil.copy(files["uncertified"], live)
    url = serve({"reload_interval_seconds": 0.05}, certificates={"default": str(live)})
    client = sdk_client(f"{url}/v1", LIMITED_KEY)
    assert ask(client, 0.9999)[0].model_extra["basguard"]["decision"] == "abstain"
    # Certifying again, onto the file the config names, is all it takes.
    certify(files["calibrator"], files["data"], live, max_error_rate=0.1, confidence=0.9)

    def answered() -> bool:
        return bool(ask(client, 0.9999)[0].model_extra["basguard"]["decision"] == "answer")

    wait_until(answered, what="answered")
    from calibrators.certificate import load_certificate

    report = ask(client, 0.9999)[0].model_extra["basguard"]["risk_limit"]
    assert report["status"] == "certified"
    # Another certification is another certificate, with a version of its own.
    assert report["certificate"] == load_certificate(live).version != certificate.version
    assert httpx.get(f"{url}/metrics").status_code == 200


def test_the_risk_card_says_which_models_answer_nothing(
    files: dict[str, Path], fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
) -> None:
    config = limited_config(fake_upstream[1], str(files["calibrator"]),
                            certificates={"models": {"fake": str(files["uncertified"])}})
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["policy", "card", "limited", "--config", str(path), "-o",
                 str(tmp_path / "cards")]) == 0
    text = (tmp_path / "cards" / "limited-risk-card.md").read_text(encoding="utf-8")
    assert (f"| `fake` | `{files['uncertified']}` | not certified | 40 | | | | "
            "**answers nothing** |") in text
    assert "| `keyed` | none | not certified | 0 | | | | **answers nothing** |" in text
    assert "- **Audit sample:** none (`audit_rate` is 0): no labels can certify" in text
    assert "- Risk limit, `fake`: risk limit (at most 10% wrong among the answers with 90% " \
           "confidence): certificate" in text


def test_policy_check_on_a_policy_file_checks_each_certificate_against_its_calibrator(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    policy = {"version": 1, "tenants": {"lab": {
        "api_keys": [{"env": "LAB_API_KEY"}],
        "risk": {"profile": "balanced", "max_error_rate": 0.1, "confidence": 0.9,
                 "certificates": {"default": str(files["certified"])}},
        "calibrators": {"default": str(files["calibrator"]),
                        "models": {"other": str(files["directory"] / "other-cal.json")}}}}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    assert main(["policy", "check", str(path)]) == 0
    captured = capsys.readouterr()
    assert "lab / default: at most 10% wrong among the answers with 90% confidence; certified " \
           "threshold" in captured.out
    # A model with a calibrator of its own is not covered by the default certificate.
    assert "lab / other: ANSWERS NOTHING: risk limit (at most 10% wrong among the answers with " \
           "90% confidence) without a certificate on model 'other'" in captured.out
    assert "without a certificate on model 'other'" in captured.err  # and a warning
    policy["tenants"]["lab"]["risk"]["certificates"]["models"] = {"other": str(files["certified"])}
    path.write_text(yaml.safe_dump(policy))
    assert main(["policy", "check", str(path)]) == 2
    err = capsys.readouterr().err
    lines = path.read_text().splitlines()
    start = _config_lines(path, "certificates:")
    line = next(i for i, text in enumerate(lines[start:], start + 1) if "other: " in text)
    assert f"policy.yaml:{line}: " in err and "but the calibrator of model 'other' is" in err


@pytest.mark.parametrize("which", ["certified", "uncertified"])
def test_policy_simulate_compares_with_the_threshold_the_risk_limit_serves(
    files: dict[str, Path], fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], which: str,
) -> None:
    from calibrators.certificate import load_certificate

    config = limited_config(fake_upstream[1], str(files["calibrator"]),
                            certificates={"default": str(files[which])}, audit_rate=0.05)
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["policy", "simulate", "--records", str(files["directory"] / "held_out.jsonl"),
                 "--calibrator", str(files["calibrator"]), "--config", str(path),
                 "--tenant", "limited", "--model", "fake", "--json", "--bootstrap", "0"]) == 0
    reference = json.loads(capsys.readouterr().out)["reference"]
    certified = load_certificate(files[which]).threshold
    if certified is None:  # uncertified: the tenant answers nothing
        assert reference["threshold"] > 1.0 and "it answers nothing" in reference["source"]
    else:
        assert reference["threshold"] == max(0.5, certified)
        assert f"the certified {certified:.3f}" in reference["source"]
