"""``basguard demo``: the whole guardrail in front of a real local model, no API key needed.

Starts SmolLM2 under llama.cpp's OpenAI-compatible server, then basguard with two tenants of
different risk profiles in front of it, asks both the same question to show one answered and one
withheld, and prints how to call it. ``--calibration-report`` instead fits and evaluates
calibrators on the real LLM outputs shipped in ``data/calibration/``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx

from calibrators.report import FileReport, format_markdown_table, report_file
from calibrators.signals import ScoreSpec, parse_score_spec

__all__ = ["DEMO_DATA", "DEMO_FILES", "DemoFile", "default_data_dir", "run_demo", "serve_demo"]

DEMO_FILES = Path(__file__).resolve().parent / "demo_files"
DEMO_KEYS = {"explorer": "demo-explorer-key-public", "clinic": "demo-clinic-key-public"}
DEMO_QUESTION = "What is the capital of Japan?"


@dataclass(frozen=True)
class DemoFile:
    """A shipped data file and the confidence signals it carries."""

    name: str
    scores: tuple[str, ...]


DEMO_DATA: tuple[DemoFile, ...] = (
    DemoFile("rankcal_gpt-3.5-turbo_nq-open_T1.0_first1500q.jsonl",
             ("token_prob", "mean_logprob", "sum_logprob", "agreement")),
    DemoFile("rankcal_Llama-2-7b-chat-hf_nq-open_T1.0_first1500q.jsonl",
             ("token_prob", "mean_logprob", "sum_logprob", "agreement")),
    DemoFile("chembench_gpt-4o-2024-08-06_tokenprob.jsonl", ("token_prob",)),
    DemoFile("chembench_llama-3.1-8b-instruct_tokenprob.jsonl", ("token_prob",)),
    DemoFile("chembench_gpt-4o_verbalized.jsonl", ("verbalized",)),
    DemoFile("chembench_claude3.5_verbalized.jsonl", ("verbalized",)),
)


def default_data_dir() -> Path:
    """``data/calibration`` of the source tree basguard runs from."""
    return Path(__file__).resolve().parents[1] / "data" / "calibration"


def run_demo(data_dir: Path, out_dir: Path) -> list[FileReport]:
    """Report every shipped data file into ``out_dir`` and return the rows of the table."""
    reports = []
    for demo_file in DEMO_DATA:
        specs: list[ScoreSpec] = [parse_score_spec(field) for field in demo_file.scores]
        reports.append(
            report_file(
                data_dir / demo_file.name, scores=specs, label="correct", group="group",
                out_dir=out_dir,
            )
        )
        print(f"  {demo_file.name}: done", flush=True)
    (out_dir / "report.md").write_text(
        "# basguard: calibration on real LLM outputs\n\n"
        "Calibrated figures are out-of-fold (grouped 5-fold cross-validation).\n\n"
        + format_markdown_table(reports),
        encoding="utf-8",
    )
    return reports


def write_demo_config(directory: Path, model_base_url: str) -> Path:
    """The demo config with the local model's address, next to a copy of its calibrator."""
    template = (DEMO_FILES / "demo-config.yaml").read_text(encoding="utf-8")
    shutil.copy(DEMO_FILES / "smollm2-calibrator.json", directory / "smollm2-calibrator.json")
    path = directory / "basguard-demo.yaml"
    # The shipped file is a complete config (`policy check` accepts it) with a default address.
    served = template.replace('"http://127.0.0.1:8080/v1"', f'"{model_base_url}"')
    path.write_text(served, encoding="utf-8")
    return path


def usage_text(base_url: str, store: object) -> str:
    """How to use the demo; ``store`` is shown as given (a path, or a URL without password)."""
    return f"""
basguard is serving the OpenAI API at {base_url}/v1 in front of SmolLM2-135M (llama.cpp).
Two tenants share the model: explorer (casual risk, answers from p >= 0.375) and clinic
(critical risk, answers only from p >= 0.99).

The examples ask with temperature 0, as the demo did: the model then gives its most likely
answer, the same one each time, with the same p. Without it llama.cpp samples (temperature 0.8):
each ask can get a different answer, and p, the calibrated probability that this answer is
right, moves with it (the same question gave p = 0.889, then 0.333).

  # Python, the official openai SDK: only the base URL and the key change
  from openai import OpenAI
  client = OpenAI(base_url="{base_url}/v1", api_key="{DEMO_KEYS['explorer']}")
  reply = client.chat.completions.create(
      model="smollm2", temperature=0,
      messages=[{{"role": "user", "content": "{DEMO_QUESTION}"}}])
  print(reply.choices[0].message.content, reply.basguard)

  # curl, as the clinic tenant
  curl -s {base_url}/v1/chat/completions \\
    -H "Authorization: Bearer {DEMO_KEYS['clinic']}" -H "Content-Type: application/json" \\
    -d '{{"model": "smollm2", "temperature": 0,
         "messages": [{{"role": "user", "content": "{DEMO_QUESTION}"}}]}}'

  # was it right? label it (the id is in reply.basguard and the x-basguard-id header)
  client.post("/feedback", body={{"id": reply.basguard["id"], "correct": True}}, cast_to=object)

  # what the clinic withheld, for a reviewer to label; metrics for Prometheus
  curl -s {base_url}/v1/feedback/withheld -H "Authorization: Bearer {DEMO_KEYS['clinic']}"
  curl -s {base_url}/metrics

Decisions and labels are stored in {store}.
Press Ctrl+C to stop.
"""


def _show_both_tenants(base_url: str) -> None:
    """Ask both tenants the same question and print what each got."""
    for tenant, key in DEMO_KEYS.items():
        try:
            response = httpx.post(
                f"{base_url}/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={"model": "smollm2", "max_tokens": 24, "temperature": 0,
                      "messages": [{"role": "user", "content": DEMO_QUESTION}]},
                timeout=120,
            )
            body = response.json()
            decision = body["basguard"]
            print(f"  {tenant:>8}: {decision['decision']:<7} p={decision['confidence']:.3f} "
                  f"(threshold {decision['threshold']:.3f}) -> "
                  f"{body['choices'][0]['message']['content']!r}", flush=True)
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            print(f"  {tenant:>8}: the demo request failed: {exc}", flush=True)


def serve_demo(
    host: str, port: int,
    *, model_server: Callable[[Path], AbstractContextManager[str]] | None = None,
) -> None:
    """Run the local model and basguard until interrupted (Ctrl+C or SIGTERM, which drains).

    ``model_server(log_path)`` starts the OpenAI-compatible model and yields its ``/v1`` URL;
    by default SmolLM2 under llama.cpp.
    """
    from proxy.http.app import create_app
    from proxy.http.listening import bind_listening_socket
    from proxy.http.server import GatewayServer, raise_open_file_limit, server_config
    from proxy.runtime.settings import ServerSettings
    from proxy.tools.local_model import run_local_model

    start_model = model_server or (lambda log: run_local_model(log=log))
    base_url = f"http://{host}:{port}"
    # The port first: a taken one fails at once, not after the model has loaded.
    with bind_listening_socket(host, port, to_change="--port N") as sock, \
            tempfile.TemporaryDirectory(prefix="basguard-demo-") as tmp:
        print("starting SmolLM2 (llama.cpp server) ...", flush=True)
        with start_model(Path(tmp) / "llama-server.log") as model_url:
            config = write_demo_config(Path(tmp), model_url)
            settings = ServerSettings(config=config, host=host, port=port)
            raise_open_file_limit()
            app = create_app(settings)
            # The same server as `serve`: head and connection limits, and SIGTERM drains.
            server = GatewayServer(server_config(settings, app, log_level="warning"))

            def introduce() -> None:
                while not server.started and not server.should_exit:
                    time.sleep(0.1)
                if server.started:
                    print(f"\nthe same question, {DEMO_QUESTION!r}, for both tenants:")
                    _show_both_tenants(base_url)
                    location = settings.store_location  # shown with any password masked
                    shown = location.path.resolve() if location.path else location
                    print(usage_text(base_url, shown), flush=True)

            threading.Thread(target=introduce, daemon=True).start()
            server.run(sockets=[sock])
