"""End to end with a real model: the openai SDK -> basguard -> llama.cpp serving SmolLM2.

Not skipped when llama-cpp-python is missing: the 'test' extra installs it, and a missing real
model must fail CI rather than pass it silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest

from proxy.cli.main import main
from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from proxy.signals.grading import is_correct
from proxy.tools.demo import DEMO_KEYS, DEMO_QUESTION, usage_text, write_demo_config
from proxy.tools.local_model import free_port, run_local_model
from tests.support.loopback import serve_in_thread
from tests.support.metrics import scrape
from tests.support.waiting import wait_until

# The real model (SmolLM2 under llama.cpp): seconds per answer on a 2-core machine.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SmolLM2 under llama.cpp, shared by this module's gateways."""
    directory = tmp_path_factory.mktemp("llama")
    with run_local_model(threads=2, log=directory / "llama.log") as url:
        yield url


@pytest.fixture(scope="module")
def demo_gateway(model_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("demo")
    config = write_demo_config(Path(directory), model_url)
    app = create_app(ServerSettings(config=config, reload_interval_seconds=0,
                                    store=directory / "decisions.sqlite3"))
    with serve_in_thread(app) as url:
        yield f"{url}/v1"


Tenants = dict[str, openai.OpenAI]


@pytest.fixture(scope="module")
def tenants(demo_gateway: str) -> Iterator[Tenants]:
    """An SDK client per demo tenant, closed with the module (why: conftest's ``sdk_client``)."""
    with ExitStack() as clients:
        yield {tenant: clients.enter_context(openai.OpenAI(
            base_url=demo_gateway, api_key=key, max_retries=0, timeout=120))
            for tenant, key in DEMO_KEYS.items()}


def ask(tenants: Tenants, tenant: str, **kwargs: object) -> object:
    return tenants[tenant].chat.completions.create(
        model="smollm2", temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": DEMO_QUESTION}], **kwargs)  # type: ignore[call-overload]


def test_confidence_from_real_logprobs(tenants: Tenants) -> None:
    response = ask(tenants, "explorer", logprobs=True, top_logprobs=2)
    decision = response.model_extra["basguard"]  # type: ignore[attr-defined]
    assert 0.0 < decision["confidence"] < 1.0
    assert decision["calibrator"]["method"] != "identity"
    tokens = response.choices[0].logprobs.content  # type: ignore[attr-defined]
    assert tokens and all(math.isfinite(t.logprob) and len(t.top_logprobs) <= 2 for t in tokens)


def test_streamed_confidence_from_real_logprobs(tenants: Tenants) -> None:
    chunks = list(ask(tenants, "explorer", stream=True))  # type: ignore[call-overload]
    decision = chunks[-1].model_extra["basguard"]
    assert 0.0 < decision["confidence"] < 1.0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_same_question_answered_for_one_tenant_and_withheld_for_the_other(
    tenants: Tenants,
) -> None:
    explorer = ask(tenants, "explorer")
    clinic = ask(tenants, "clinic")
    assert explorer.model_extra["basguard"]["decision"] == "answer"  # type: ignore[attr-defined]
    assert clinic.model_extra["basguard"]["decision"] == "abstain"  # type: ignore[attr-defined]
    assert "Tokyo" in explorer.choices[0].message.content  # type: ignore[attr-defined]
    assert "clinician" in clinic.choices[0].message.content  # type: ignore[attr-defined]


def test_a_reviewer_labels_what_the_real_model_said_and_the_metrics_count_it(
    demo_gateway: str, tenants: Tenants,
) -> None:
    """The clinic withholds SmolLM2's answer; graded against the truth, it is over-abstention."""
    clinic = tenants["clinic"]
    asked = ask(tenants, "clinic")
    decision_id = asked.model_extra["basguard"]["id"]  # type: ignore[attr-defined]
    listing = clinic.get("/feedback/withheld", cast_to=object)
    (item,) = [i for i in listing["data"] if i["id"] == decision_id]  # type: ignore[index]
    assert item["prompt"] == DEMO_QUESTION
    correct = is_correct(item["answer"], ["Tokyo"])
    assert correct  # the model knows; the clinic's threshold of 0.99 withheld it anyway
    receipt = clinic.post("/feedback", body={"id": decision_id, "correct": correct},
                          cast_to=object)
    assert receipt["outcome"] == "abstained_correct"  # type: ignore[index]
    samples = scrape(demo_gateway.removesuffix("/v1"))
    key = ("basguard_feedback_decisions",
           (("model", "smollm2"), ("outcome", "abstained_correct"), ("tenant", "clinic")))
    assert samples[key] == 1


def test_finding_the_weights_does_not_load_llama_cpp() -> None:
    # A fresh interpreter, since this one may already have imported it for other reasons.
    probe = ("import sys; from proxy.tools.local_model import smollm2_weights; "
             "path = smollm2_weights(); "
             "print(path.suffix, path.is_file(), 'llama_cpp' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.split()
    assert output == [".gguf", "True", "False"]


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def serving() -> bool:
        assert process.poll() is None, f"local-model exited:\n{log.read_text()}"
        return httpx.get(f"{url}/models", timeout=2).status_code == 200

    # Loading the model on a busy 2-core machine takes a while.
    wait_until(serving, what="local-model to serve", timeout=240, interval=0.5,
               output=log.read_text, ignoring=(httpx.HTTPError,))


def test_local_model_command_serves_the_gateway_and_collect_until_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`basguard local-model --port P`: a standalone server that serve and collect point at."""
    port = free_port()
    log = tmp_path / "local-model.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "local-model", "--port", str(port),
             "--threads", "2"], stdout=output, stderr=subprocess.STDOUT)
    model_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(model_url, process, log)
        config = write_demo_config(tmp_path, model_url)
        app = create_app(ServerSettings(config=config, reload_interval_seconds=0,
                                        store=tmp_path / "decisions.sqlite3"))
        with serve_in_thread(app) as url, openai.OpenAI(
                base_url=f"{url}/v1", api_key=DEMO_KEYS["explorer"], max_retries=0,
                timeout=120) as client:
            reply = client.chat.completions.create(
                model="smollm2", max_tokens=24, temperature=0,
                messages=[{"role": "user", "content": DEMO_QUESTION}])
        decision = reply.model_extra["basguard"]  # type: ignore[index]
        assert 0.0 < decision["confidence"] < 1.0 and decision["decision"] == "answer"

        questions = tmp_path / "q.jsonl"
        questions.write_text('{"id": "japan", "question": "What is the capital of Japan?", '
                             '"answers": ["Tokyo"]}\n')
        out = tmp_path / "records.jsonl"
        assert main(["collect", "--config", str(config), "--questions", str(questions),
                     "--out", str(out)]) == 0, capsys.readouterr().err
        (record,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert record["correct"] == 1 and 0.0 < record["token_prob"] < 1.0

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        # The llama.cpp server it started went with it.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{model_url}/models", timeout=2)
        output = log.read_text()
        assert f"serving the OpenAI API at {model_url}" in output
        # Quiet: the banner and nothing of llama.cpp's own output (some 2,000 lines while
        # loading, about 7 per request), though it served two requests.
        assert "--verbose shows it" in output
        assert "llama_model_loader" not in output and "llama_perf" not in output, output
        assert len(output.splitlines()) < 30, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_consistency_gives_the_real_model_a_confidence_without_its_logprobs(
    model_url: str, tmp_path: Path
) -> None:
    """The issue's example on the real model: sampling agreement alone, no logprobs read."""
    key = "consistency-tenant-key-0123456789"
    config = {
        "version": 1,
        "models": {"smollm2": {"base_url": model_url, "timeout_seconds": 120}},
        "tenants": {"sampler": {
            "api_keys": [{"sha256": hashlib.sha256(key.encode()).hexdigest()}],
            "risk": {"profile": "casual"}, "mode": "annotate",
            "confidence": {"signals": ["consistency"],
                           "consistency": {"samples": 3, "temperature": 1.0},
                           "timeout_seconds": 100},
        }},
    }
    path = tmp_path / "basguard.yaml"
    path.write_text(json.dumps(config))
    app = create_app(ServerSettings(config=path, reload_interval_seconds=0,
                                    store=tmp_path / "decisions.sqlite3"))
    with serve_in_thread(app) as url, openai.OpenAI(
        base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300
    ) as client:
        reply = client.chat.completions.create(
            model="smollm2", temperature=0, max_tokens=24,
            messages=[{"role": "user", "content": DEMO_QUESTION}])
    decision = reply.basguard  # type: ignore[attr-defined]
    signals = decision["signals"]
    assert signals["extra_calls"] == 3, signals
    results = [call["result"] for call in signals["calls"]]
    assert all(call["signal"] == "consistency" for call in signals["calls"]), signals
    if results.count("ok") == 0:
        # Every sample failed (a very slow machine): then the decision says why.
        assert decision["confidence"] is None and decision["choices"][0]["reason"], decision
        return
    # The agreement rate of the samples that answered: a multiple of 1/answered (the identity
    # calibrator keeps p within [1e-6, 1 - 1e-6]).
    answered = results.count("ok")
    assert decision["confidence"] is not None
    scaled = decision["confidence"] * answered
    assert math.isclose(scaled, round(scaled), abs_tol=1e-4), decision
    assert decision["decision"] == ("answer" if decision["confidence"] >= 0.375 else "abstain")
    assert reply.choices[0].logprobs is None  # nobody asked for them


def test_local_model_verbose_shows_llama_cpps_output(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "local-model.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "local-model", "--port", str(port),
             "--threads", "2", "--verbose"], stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/v1", process, log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        text = log.read_text()
        assert text.count("llama_model_loader") > 20 and "--verbose shows it" not in text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_local_model_on_a_taken_port_says_which_option_moves_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "proxy.cli", "local-model", "--port",
                               str(port)], capture_output=True, text=True, timeout=120,
                              check=False)
    assert done.returncode == 2
    assert done.stderr == (f"basguard: error: port {port} is already in use on 127.0.0.1 "
                           f"(another basguard, or another server: `ss -ltnp 'sport = :{port}'` "
                           "names it); choose another port with --port N\n")


def test_the_demos_examples_give_the_same_answer_and_p_each_time(demo_gateway: str) -> None:
    """The usage text's curl body asks with temperature 0: the same p twice, as it says."""
    text = usage_text("http://127.0.0.1:8000", "decisions.sqlite3")
    body = json.loads(text.split("-d '", 1)[1].split("'", 1)[0])
    assert body["temperature"] == 0
    seen = set()
    for _ in range(2):
        reply = httpx.post(f"{demo_gateway}/chat/completions", json=body, timeout=120,
                           headers={"Authorization": f"Bearer {DEMO_KEYS['clinic']}"}).json()
        seen.add((reply["basguard"]["confidence"], reply["basguard"]["decision"]))
    assert len(seen) == 1, seen
    assert "temperature=0" in text
