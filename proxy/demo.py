"""``basguard demo``: the main job with its embedded defaults.

Fits and evaluates ``auto`` calibrators on the real LLM outputs shipped in ``data/calibration/``
and prints the BAS-paper-style table, with figures under ``basguard-report/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calibrators.report import FileReport, format_markdown_table, report_file
from calibrators.signals import ScoreSpec, parse_score_spec

__all__ = ["DEMO_DATA", "DemoFile", "default_data_dir", "run_demo"]


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
    """Report every shipped file into ``out_dir`` and return the rows of the table."""
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
    table = format_markdown_table(reports)
    (out_dir / "report.md").write_text(
        "# basguard demo: calibration on real LLM outputs\n\n"
        "Calibrated figures are out-of-fold (grouped 5-fold cross-validation).\n\n" + table,
        encoding="utf-8",
    )
    return reports
