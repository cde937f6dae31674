"""``basguard calibrate certify --from-store``: live traffic with an audit sample, labelled
through the feedback API, certified from the store on the audited labels only, and the
certificate then served."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import openai
import pytest
import yaml

from calibrators.artifact import load_artifact
from calibrators.certificate import load_certificate
from proxy.cli.main import main
from proxy.runtime.state import build_runtime
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, serve_gateway
from tests.support.risk import LIMITED_KEY, ask, identity_calibrator, limited_config

LIMIT = ("--max-error-rate", "0.3", "--confidence", "0.9")


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")


@pytest.fixture(scope="module")
def traffic(fake_upstream: tuple[FakeUpstream, str],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """300 requests of the tenant ``limited`` (a limit not yet certified: it answers nothing,
    audit_rate 0.5), each labelled as a calibrated answer would be: correct with probability p.
    Every decision is labelled, as if people labelled the rest too."""
    directory = tmp_path_factory.mktemp("traffic")
    calibrator = directory / "cal.json"
    identity_calibrator(calibrator)
    config = limited_config(fake_upstream[1], str(calibrator), certificates=None,
                            max_error_rate=0.3, confidence=0.9, audit_rate=0.5)
    rng = random.Random(3)
    audited = 0
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
        with serve_gateway(directory, config) as url, openai.OpenAI(
                base_url=f"{url}/v1", api_key=LIMITED_KEY, max_retries=0, timeout=10) as client:
            for _ in range(300):
                # p in [0.85, 1): about 8 % wrong, far enough under the limit that whichever
                # half the audit draws certifies (all but about 1 draw in 1000).
                p = rng.randrange(85, 100) / 100
                report = ask(client, p)[0].model_extra["basguard"]
                assert report["decision"] == "abstain"  # uncertified
                audited += report["audited"]
                client.post("/feedback", body={"id": report["id"], "correct": rng.random() < p},
                            cast_to=object)
    return {"calibrator": calibrator, "store": directory / "decisions.sqlite3",
            "config": config, "audited": audited}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_audit_sample_certifies_and_the_certificate_is_then_served(
    traffic: dict[str, object], tmp_path: Path, sdk_client: SDK,
    capsys: pytest.CaptureFixture[str],
) -> None:
    audited = traffic["audited"]
    assert isinstance(audited, int) and 100 < audited < 200
    certificate = tmp_path / "risk.json"
    status, out, err = run(capsys, "calibrate", "certify", str(traffic["calibrator"]),
                           "--from-store", str(traffic["store"]), "--tenant", "limited",
                           "--model", "fake", *LIMIT, "-o", str(certificate))
    assert status == 0, out + err
    assert out.startswith("certified: answer iff p >= ")
    assert f"used {audited} labelled audited decisions of tenant 'limited', model 'fake', " \
           "one per request" in out
    assert (f"left out {300 - audited} labelled decisions not in the audit sample (labels "
            "people chose, such as the withheld answers they reviewed, are not a sample of "
            "traffic and would bias the bound)") in out
    written = load_certificate(certificate, calibrator=load_artifact(traffic["calibrator"]))
    assert written.labels == audited
    assert written.groups.field == "decision"
    assert str(traffic["store"]) in written.data.source and "audited" in written.data.source
    # --json: the same document.
    status, out, _ = run(capsys, "calibrate", "certify", str(traffic["calibrator"]),
                         "--from-store", str(traffic["store"]), "--tenant", "limited", *LIMIT,
                         "--json")
    assert status == 0 and json.loads(out)["labels"] == audited  # every model: only fake here
    # The gateway serves it: answers from the certified threshold on.
    config = copy.deepcopy(traffic["config"])  # shared by the module's tests
    assert isinstance(config, dict)
    config["tenants"]["limited"]["risk"]["certificates"] = {"default": str(certificate)}
    served = tmp_path / "served"
    served.mkdir()
    with serve_gateway(served, config) as url:
        client = sdk_client(f"{url}/v1", LIMITED_KEY)
        report = ask(client, 0.995)[0].model_extra["basguard"]
        assert report["decision"] == "answer"
        assert report["risk_limit"]["certified_threshold"] == written.threshold
        assert report["risk_limit"]["labels"] == audited


def test_labels_outside_the_sample_cannot_certify(
    traffic: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # A calibrator fitted after the traffic: every audited decision may have been its
    # training data, and the rest are labels people chose.
    later = tmp_path / "later.json"
    identity_calibrator(later)
    status, _, err = run(capsys, "calibrate", "certify", str(later), "--from-store",
                         str(traffic["store"]), "--tenant", "limited", *LIMIT,
                         "-o", str(tmp_path / "never.json"))
    assert status == 2
    assert "no labelled decision in the audit sample of tenant 'limited' made after " \
           "calibrator" in err
    assert "are not a sample of traffic" in err
    assert "made before the calibrator was fitted" in err
    assert "set the tenant's audit_rate and label the decisions `basguard review list " \
           "--audited` lists" in err
    assert not (tmp_path / "never.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--tenant", "limited"), "--tenant and --model go with --from-store"),
        (("--from-store", "STORE"), "--from-store needs --tenant"),
        (("DATA", "--from-store", "STORE", "--tenant", "limited"),
         "give either a data file (with --label, --group) or --from-store, not both"),
        ((), "calibrate certify needs a data file and --label"),
    ],
)
def test_bad_combinations_are_one_line_errors(
    traffic: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...], message: str,
) -> None:
    given = [str(traffic["store"]) if a == "STORE" else str(tmp_path / "d.jsonl") if a == "DATA"
             else a for a in argv]
    status, _, err = run(capsys, "calibrate", "certify", str(traffic["calibrator"]), *given,
                         *LIMIT)
    assert status == 2 and message in err


def test_a_certificate_from_the_store_is_bound_to_its_calibrator(
    traffic: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    certificate = tmp_path / "risk.json"
    assert main(["calibrate", "certify", str(traffic["calibrator"]), "--from-store",
                 str(traffic["store"]), "--tenant", "limited", *LIMIT,
                 "-o", str(certificate)]) == 0
    capsys.readouterr()
    config = copy.deepcopy(traffic["config"])  # shared by the module's tests
    assert isinstance(config, dict)
    other = tmp_path / "other.json"
    identity_calibrator(other)
    config["tenants"]["limited"]["calibrators"] = {"default": str(other)}
    config["tenants"]["limited"]["risk"]["certificates"] = {"default": str(certificate)}
    path = tmp_path / "refit.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"certified for calibrator \w+, but the tenant's "
                       r"default calibrator is"):
        build_runtime(path)
