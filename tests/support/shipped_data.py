"""Paths of the real LLM data shipped in ``data/calibration/``."""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
SHIPPED_DATA = REPOSITORY / "data" / "calibration"
NQ_GPT35 = SHIPPED_DATA / "rankcal_gpt-3.5-turbo_nq-open_T1.0_first1500q.jsonl"
NQ_LLAMA2 = SHIPPED_DATA / "rankcal_Llama-2-7b-chat-hf_nq-open_T1.0_first1500q.jsonl"
CHEMBENCH_GPT4O = SHIPPED_DATA / "chembench_gpt-4o-2024-08-06_tokenprob.jsonl"
CHEMBENCH_CLAUDE = SHIPPED_DATA / "chembench_claude3.5_verbalized.jsonl"
NQ_SCORES = ("token_prob", "mean_logprob", "sum_logprob", "agreement")
