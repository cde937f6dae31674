"""Building the runtime state: whatever bytes the config holds, the only failure is a PolicyError."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.loader import PolicyError
from policies.schema import MIN_API_KEY_LENGTH
from proxy.errors import AuthenticationFailed
from proxy.runtime.state import build_runtime
from proxy.tools.demo import DEMO_KEYS, write_demo_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.fuzzing import replace_at
from tests.support.gateway import TENANT_KEYS, gateway_config, serve_gateway
from tests.support.shipped_data import REPOSITORY

ENVIRON = {"ACME_API_KEY": "acme-key-0123456789abcdef", "UPSTREAM_KEY": "sk-upstream-0123"}
ARTIFACT = REPOSITORY / "proxy" / "tools" / "demo_files" / "smollm2-calibrator.json"


def valid_config() -> dict[str, Any]:
    return {
        "version": 1,
        "models": {
            "m": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "UPSTREAM_KEY"},
            "n": {"provider": "litellm", "model": "openai/n"},
        },
        "tenants": {
            "acme": {
                "api_keys": [{"env": "ACME_API_KEY"},
                             {"sha256": hashlib.sha256(b"other-key-0123456789").hexdigest()}],
                "risk": {"profile": "cautious"},
                "calibrators": {"default": "calibrator.json", "models": {"m": "calibrator.json"}},
            },
            "beta": {"api_keys": [{"sha256": "ab" * 32}], "risk": {"threshold": 0.7},
                     "mode": "shadow"},
        },
    }


def check_only_policy_errors(path: Path) -> None:
    try:
        state = build_runtime(path, ENVIRON)
    except PolicyError as exc:
        assert all(problem.path.startswith(str(path.parent)) for problem in exc.problems)
    else:
        assert state.tenants and state.models


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    shutil.copy(ARTIFACT, directory / "calibrator.json")
    return directory


def test_the_fuzzed_config_is_valid_unchanged(config_dir: Path) -> None:
    path = config_dir / "valid.yaml"
    path.write_text(yaml.safe_dump(valid_config()))
    state = build_runtime(path, ENVIRON)
    assert sorted(state.tenants) == ["acme", "beta"]
    assert state.tenants["acme"].calibrator_for("m").method != "identity"


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.binary(max_size=8) | st.just("9" * 5000) | st.just(10**5000 // 10**4000),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)



FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(path=st.lists(st.integers(0, 20), max_size=6), value=VALUES)
def test_any_value_anywhere_is_loaded_or_a_policy_error(
    config_dir: Path, path: list[int], value: Any
) -> None:
    config = config_dir / "config.yaml"
    config.write_text(yaml.safe_dump(replace_at(valid_config(), path, value)))
    check_only_policy_errors(config)


@FUZZ
@given(data=st.data())
def test_any_bytes_in_the_file_are_loaded_or_a_policy_error(
    config_dir: Path, data: st.DataObject
) -> None:
    text = yaml.safe_dump(valid_config()).encode()
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 40)))
    pieces = st.binary(max_size=40) | st.sampled_from(
        [b"[" * 3000, b"{a: " * 2000, b"9" * 5000, b"\x00", b"\xff\xfe", b"&a [*a]", b"!!python/name:os.system"])
    config = config_dir / "config.yaml"
    config.write_bytes(text[:start] + data.draw(pieces) + text[end:])
    check_only_policy_errors(config)


@FUZZ
@given(artifact=st.binary(max_size=200) | st.sampled_from(
    [b"[" * 2000 + b"]" * 2000, b'{"format": "basguard.calibrator", "x": ' + b"[" * 500 + b"]" * 500 + b"}"]))
def test_any_artifact_bytes_are_loaded_or_a_policy_error(config_dir: Path, artifact: bytes) -> None:
    directory = config_dir / "artifact-fuzz"
    directory.mkdir(exist_ok=True)
    (directory / "calibrator.json").write_bytes(artifact)
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(valid_config()))
    check_only_policy_errors(config)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        # A directory, a NUL byte, a name too long for the file system: the OS refuses each.
        ("fuzz", "cannot read the artifact"),
        ("a\x00b.json", "cannot read the artifact"),
        ("x" * 4000, "cannot read the artifact"),
    ],
)
def test_artifact_paths_the_os_refuses_are_located(
    config_dir: Path, replace: str, message: str
) -> None:
    config = valid_config()
    config["tenants"]["acme"]["calibrators"]["default"] = replace
    path = config_dir / "paths.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(PolicyError) as caught:
        build_runtime(path, ENVIRON)
    assert message in caught.value.message
    assert caught.value.line is not None


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    path = directory / "keys.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_environment_key_shorter_than_the_minimum_fails_the_load(config_dir: Path) -> None:
    path = write_config(config_dir, valid_config())
    short = {**ENVIRON, "ACME_API_KEY": "k" * (MIN_API_KEY_LENGTH - 1)}
    with pytest.raises(PolicyError) as caught:
        build_runtime(path, short)
    (problem,) = caught.value.problems
    assert problem.line == 11  # the `- env: ACME_API_KEY` line
    assert f"keys need at least {MIN_API_KEY_LENGTH}" in problem.message
    assert "k" * (MIN_API_KEY_LENGTH - 1) not in str(caught.value)  # never echo a key


def test_the_minimum_and_surrounding_whitespace(config_dir: Path) -> None:
    # A key file read into the variable keeps its newline; the header's key is stripped too.
    key = "k" * MIN_API_KEY_LENGTH
    state = build_runtime(write_config(config_dir, valid_config()),
                          {**ENVIRON, "ACME_API_KEY": f"{key}\n"})
    assert state.authenticate(f"Bearer {key}").name == "acme"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer  ", "Bearer x", "Bearer " + "k" * (MIN_API_KEY_LENGTH - 1),
     "Basic " + "k" * MIN_API_KEY_LENGTH],
)
def test_short_or_missing_keys_never_authenticate(config_dir: Path, authorization: str | None) -> None:
    # Even a tenant configured with the digest of a short key: a digest cannot show its length.
    config = valid_config()
    short = "k" * (MIN_API_KEY_LENGTH - 1)
    config["tenants"]["beta"]["api_keys"] = [{"sha256": hashlib.sha256(short.encode()).hexdigest()},
                                             {"sha256": hashlib.sha256(b"x").hexdigest()}]
    state = build_runtime(write_config(config_dir, config), ENVIRON)
    with pytest.raises(AuthenticationFailed):
        state.authenticate(authorization)


def test_a_short_key_gets_401_over_the_wire(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    config = gateway_config(fake_upstream[1])
    config["tenants"]["enforcer"]["api_keys"] = [{"sha256": hashlib.sha256(b"k").hexdigest()}]
    with serve_gateway(tmp_path, config) as url:
        for key in ("k", "k" * (MIN_API_KEY_LENGTH - 1)):
            response = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {key}"})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
        ok = httpx.get(f"{url}/v1/models",
                       headers={"authorization": f"Bearer {TENANT_KEYS['annotator']}"})
        assert ok.status_code == 200


def test_the_demo_keys_are_long_enough_and_authenticate(tmp_path: Path) -> None:
    state = build_runtime(write_demo_config(tmp_path, "http://127.0.0.1:9/v1"), {})
    for tenant, key in DEMO_KEYS.items():
        assert len(key) >= MIN_API_KEY_LENGTH
        assert state.authenticate(f"Bearer {key}").name == tenant


def test_each_tenant_and_model_gets_its_signal_plan_and_uncalibrated_default(
    tmp_path: Path,
) -> None:
    from proxy.runtime.state import UNCALIBRATED

    config = valid_config()
    del config["tenants"]["acme"]["calibrators"]
    config["tenants"]["acme"]["confidence"] = {
        "signals": ["consistency"], "consistency": {"samples": 3},
        "models": {"n": {"signals": ["verbalized", "logprobs"]}}}
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    acme = build_runtime(path, ENVIRON).tenants["acme"]
    m, n = acme.signal_plan_for("m"), acme.signal_plan_for("n")
    assert [s.name for s in m.to_run] == ["consistency"] and m.extra_calls() == 3
    assert acme.calibrator_for("m").feature_names == ("agreement",)
    # The first listed signal's feature; logprobs is enabled but nothing reads it.
    assert [s.name for s in n.enabled] == ["verbalized", "logprobs"]
    assert [s.name for s in n.to_run] == ["verbalized"] and n.extra_calls() == 1
    assert acme.calibrator_for("n").feature_names == ("verbalized_prob",)
    # Uncalibrated versions are stable across loads (and processes): fixed creation date.
    again = build_runtime(path, ENVIRON).tenants["acme"]
    assert again.calibrator_for("m").version == acme.calibrator_for("m").version
    # A tenant without a confidence section is today's: logprobs, token_prob, same version.
    beta = build_runtime(path, ENVIRON).tenants["beta"]
    assert beta.calibrator_for("m") is UNCALIBRATED
    assert [s.name for s in beta.signal_plan_for("m").to_run] == ["logprobs"]


def test_an_upstream_key_is_stripped_and_one_no_header_can_carry_fails_the_load(
        config_dir: Path) -> None:
    path = write_config(config_dir, valid_config())
    state = build_runtime(path, {**ENVIRON, "UPSTREAM_KEY": "sk-upstream-0123\n"})
    assert state.models["m"].api_key == "sk-upstream-0123"
    with pytest.raises(PolicyError) as caught:
        build_runtime(path, {**ENVIRON, "UPSTREAM_KEY": "sk-up\nX-Evil: 1"})
    (problem,) = caught.value.problems
    assert problem.line == 3  # the model's `api_key_env: UPSTREAM_KEY` line
    assert "an HTTP header cannot carry" in problem.message
    assert "X-Evil" not in str(caught.value)  # never echo a key
