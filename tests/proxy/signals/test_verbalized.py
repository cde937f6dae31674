"""The verbalized signal: a stated probability, parsed robustly; unparseable means missing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.signals import Answer, CallResult, SignalRequest, measure_signals
from proxy.signals.answers import AnswerMatcher
from proxy.signals.verbalized import (
    VERBALIZED_PROMPT,
    VERDICT_PARTLY,
    VERDICT_RIGHT,
    VERDICT_WRONG,
    VerbalizedSignal,
    parse_probability,
    parse_top_k,
    stated_probability,
    top_k_probability,
)
from proxy.wire.chat import ChatFormat
from proxy.wire.completions import CompletionFormat
from tests.support.fake_caller import FakeCaller, chat_reply, failing, hanging, replies

QUESTION = {"model": "claude", "messages": [{"role": "user", "content": "Who wrote Dune?"}]}


def request(body: dict[str, Any] = QUESTION, fmt: Any = ChatFormat) -> SignalRequest:
    return SignalRequest("claude", fmt, body, frozenset({"verbalized_prob"}))


@pytest.mark.parametrize(("reply", "expected"), [
    ("85", 0.85),
    ("85%", 0.85),
    ("85 %", 0.85),
    ("0.85", 0.85),
    (".85", 0.85),
    ("85/100", 0.85),
    ("8.5/10", 0.85),
    ("4 out of 5", 0.8),
    ("I am 90 percent sure.", 0.9),
    ("Probability: 0.7", 0.7),
    ("Confidence: **95%**", 0.95),
    ("On a scale from 0 to 100, I would say 60.", 0.6),
    ("Between 0 and 1: 0.3", 0.3),
    ("100", 1.0),
    ("0", 0.0),
    ("1", 0.01),  # the prompt asks for 0 to 100
    ("1.0", 1.0),  # a decimal up to 1 is a probability
    ("72.5", 0.725),
    ("Very likely.", 0.9),
    ("It is almost certain.", 0.93),
    ("Unlikely", 0.3),
    ("highly unlikely", 0.07),
    ("It is not likely to be right.", 0.3),
    ("certainly not", 0.02),
    ("I'm not sure", 0.5),
    ("Probably.", 0.75),
    ("I'm fairly confident", 0.8),
])
def test_stated_probabilities(reply: str, expected: float) -> None:
    assert parse_probability(reply) == pytest.approx(expected)


@pytest.mark.parametrize("reply", ["", "I cannot know that.", "-20", "250", "150%", "G1: Paris",
                                   "The author is Frank Herbert."])
def test_replies_without_a_probability(reply: str) -> None:
    assert parse_probability(reply) is None


# Real SmolLM2-135M replies to verbalized follow-ups (llama.cpp, temperature 0, TriviaQA and
# MMLU college CS, 30 Nov 2026), as read before (an unreadable reply or a wrong number) and now.
@pytest.mark.parametrize(("reply", "expected"), [
    # Sums instead of an answer: their operands are no probability (1 - (d) was read as 1 %).
    ("The probability of the proposed answer being correct is 1 - (d)", None),
    ("The probability of the proposed answer being correct is 1 - (c) = 1 - (d).", None),
    ("The probability of the proposed answer being correct is 1 - (0.95) = 0.06", 0.06),
    ("The probability of the proposed answer being correct is 1 - (probability of c) = 1 - 0.5"
     " = 0.5", 0.5),
    ("The probability of the proposed answer being correct is 1:1.", None),
    ("The proposed answer is not correct. The state of Tennessee has a population of 1,298,30",
     VERDICT_WRONG),
    ("The proposed answer is incorrect.", VERDICT_WRONG),
    ("The proposed answer is not true.", VERDICT_WRONG),
    ("The proposed answer is not entirely correct. The VS-300 was a type of high-performance",
     VERDICT_PARTLY),
    ("The proposed answer is not possible.", 0.02),
    ("The proposed answer is not a correct answer to the question.", VERDICT_WRONG),
    ("The proposed answer is not a source of atmospheric carbon.", VERDICT_WRONG),
    ("The proposed answer is not present in saliva and has an antibacterial", VERDICT_WRONG),
    ("The answer is not possible to determine based on the given information", None),
    ("The answer is correct, but I'll provide a more accurate and concise explanation", VERDICT_RIGHT),
    ("You've already answered the question correctly.", VERDICT_RIGHT),
    ("The answer is 100% correct.", 1.0),
    ("The proposed answer is 10% incorrect.", 0.9),
    ("70%\nThe answer is c) accepted by some pushdown automaton, but not regular", 0.7),
    ("The proposed answer is 0% to 100%.", None),  # names the scale, states nothing
    ("The answer is not possible to determine with certainty from 0 to 100.", None),
    ("The answer to this question is not a number.", None),
    ("To calculate the probability of getting a specific number (0 to 100) when flipping a coin,"
     " we can use the binomial distribution. However,", None),
    ("The Chinese year of 1996 is the year in which the Japanese dragon, Zheng, was born.", None),
    ("The language {ww | w in (0 + 1)*} is a) not accepted by any Turing machine", None),
    # Still read as a probability: "correct" does not end the clause.
    ("The probability that the proposed answer is correct is 85", 0.85),
])
def test_real_small_model_replies(reply: str, expected: float | None) -> None:
    assert parse_probability(reply) == (None if expected is None else pytest.approx(expected))


MCQ = ("Which of the following problems can be solved by a standard greedy algorithm?\n"
       "a) Finding a minimum spanning tree\nb) Finding a maximum clique\n"
       "c) Finding a largest clique in G\nd) Finding a Hamiltonian cycle")


@pytest.mark.parametrize(("reply", "answer", "expected"), [
    # SmolLM2 answered the multiple-choice question again instead of rating the answer (40 % of
    # college CS follow-ups): the same option endorses the proposed answer, another rejects it.
    ("The answer is c) Finding a largest clique in G", "c) Finding a largest clique in G",
     VERDICT_RIGHT),
    ("The correct answer is c).", "c) Finding a largest clique in G", VERDICT_RIGHT),
    ("The proposed answer is c) Finding a largest clique in G", "c)", VERDICT_RIGHT),
    ("c) Finding a largest clique in G", "c) Finding a largest clique in G", VERDICT_RIGHT),
    ("The answer is d.", "c) Finding a largest clique in G", VERDICT_WRONG),
    ("The answer is indeed a) Finding a minimum spanning tree.", "c)", VERDICT_WRONG),
    # Numbers inside a restated option are not probabilities; a percentage still comes first.
    ("The answer is c) log_10 (N-m).", "c) log_10 (N-m)", VERDICT_RIGHT),
    ("70%\nThe answer is c) n + 2", "c) n + 2", 0.7),
    ("The proposed answer is not correct.", "c)", VERDICT_WRONG),
    ("The answer is a bit ambiguous. The given options are not mutually exclusive", "c)", None),
])
def test_a_restated_option_is_a_verdict_on_the_proposed_one(
    reply: str, answer: str, expected: float | None
) -> None:
    assert stated_probability(reply, answer, AnswerMatcher(MCQ)) == expected


@pytest.mark.parametrize(("reply", "expected"), [
    ("The answer to this question is: Frank Herbert", VERDICT_RIGHT),
    ("The correct answer is Brian Herbert.", VERDICT_WRONG),
    ("The answer is not correct.", VERDICT_WRONG),
    ("The answer is 85%.", 0.85),
    # Said again without "the answer is": endorses; other text is no answer, so nothing.
    ("Frank Herbert wrote Dune in 1965.", VERDICT_RIGHT),
    ("Dune is a science fiction novel set on the desert planet Arrakis.", None),
])
def test_a_restated_free_text_answer_is_a_verdict(reply: str, expected: float | None) -> None:
    matcher = AnswerMatcher("Who wrote Dune?")
    assert stated_probability(reply, "Frank Herbert", matcher) == expected


@pytest.mark.parametrize(("question", "answer", "reply", "expected"), [
    # Garbage in the full run (TriviaQA, 30 Nov 2026): SmolLM2 said its answer again.
    ("Which airline has the code LACSA?",
     "The airline LACSA is a Canadian-based international carrier that operates from the LACSA "
     "International Airport in Montreal.",
     "The airline LACSA is a Canadian-based international carrier that operates from the",
     VERDICT_RIGHT),
    ("In which year was the Chinese year of the dragon in the 1990s?",
     "The Chinese year of 1996 was the year in which the Japanese dragon, Zheng, was born.",
     "1996 was the year in which the Japanese dragon, Zheng,", VERDICT_RIGHT),
    ("Which British general was killed at Khartoum in 1885?", "General Gordon",
     "The British general who was killed at Khartoum in 188", None),
])
def test_real_free_text_replies_that_answer_again(
    question: str, answer: str, reply: str, expected: float | None
) -> None:
    assert stated_probability(reply, answer, AnswerMatcher(question)) == expected


@settings(deadline=None)  # timing varies on a loaded machine
@given(st.text(max_size=300))
def test_parsing_never_raises_and_yields_a_probability_or_none(text: str) -> None:
    value = parse_probability(text)
    assert value is None or 0.0 <= value <= 1.0


@settings(deadline=None)  # timing varies on a loaded machine
@given(st.lists(st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["%", "/", " out of ", "percent", ".", "-", " ", "likely", "not ", "0 to 100"]),
), max_size=12).map("".join))
def test_parsing_number_soup_stays_in_bounds(text: str) -> None:
    value = parse_probability(text)
    assert value is None or 0.0 <= value <= 1.0


@settings(deadline=None)  # timing varies on a loaded machine
@given(st.text(max_size=300))
def test_top_k_parsing_never_raises(text: str) -> None:
    for guess, probability in parse_top_k(text):
        assert guess and 0.0 <= probability <= 1.0


def test_top_k_replies() -> None:
    reply = "G1: Frank Herbert\nP1: 80%\nG2: Isaac Asimov\nP2: 0.15\n**G3:** Arthur C. Clarke\n**P3:** ??"
    assert parse_top_k(reply) == [("Frank Herbert", 0.8), ("Isaac Asimov", 0.15)]
    assert parse_top_k("Guess 1: Paris\nProbability 1: 70") == [("Paris", 0.7)]
    assert parse_top_k("I think Frank Herbert") == []


def test_top_k_probability_of_the_answer() -> None:
    guesses = [("Frank Herbert", 0.8), ("Herbert", 0.05), ("Isaac Asimov", 0.1)]
    assert top_k_probability("Frank Herbert wrote it", guesses) == pytest.approx(0.85)
    assert top_k_probability("Tolkien", guesses) == pytest.approx(0.05)  # what is left
    assert top_k_probability("Tolkien", [("a", 0.7), ("b", 0.6)]) == 0.0
    assert top_k_probability("Oslo", [("Oslo", 0.7), ("oslo.", 0.6)]) == 1.0  # capped
    matcher = AnswerMatcher("Who wrote Dune?")
    assert top_k_probability("Dune was written by Frank Herbert.", guesses, matcher) == (
        pytest.approx(0.85))


def test_the_follow_up_asks_about_each_answer_and_reads_its_probability() -> None:
    caller = FakeCaller(replies(chat_reply("90"), chat_reply("I'd say 20%.")))
    signal = VerbalizedSignal(timeout_seconds=5)
    answers = [Answer(0, "Frank Herbert"), Answer(1, "Isaac Asimov")]
    outcome = asyncio.run(measure_signals([signal], request(), answers, caller))
    assert outcome.features == ({"verbalized_prob": 0.9}, {"verbalized_prob": 0.2})
    (model, endpoint, body), _ = caller.received
    assert (model, endpoint) == ("claude", "chat/completions")
    assert body["messages"][0]["content"] == VERBALIZED_PROMPT.format(
        question="Who wrote Dune?", answer="Frank Herbert")
    assert body["max_tokens"] == 32 and body["temperature"] == 0.0
    assert signal.extra_calls(2) == 2


def test_a_small_models_reply_that_answers_again_is_read_against_each_answer() -> None:
    caller = FakeCaller(replies(chat_reply("The correct answer is c)."),
                                chat_reply("The correct answer is c).")))
    body = {"model": "smollm2", "messages": [{"role": "user", "content": MCQ}]}
    answers = [Answer(0, "c) Finding a largest clique in G"), Answer(1, "a)")]
    outcome = asyncio.run(measure_signals(
        [VerbalizedSignal(timeout_seconds=5)],
        SignalRequest("smollm2", ChatFormat, body, frozenset({"verbalized_prob"})), answers,
        caller))
    assert outcome.features == ({"verbalized_prob": VERDICT_RIGHT},
                                {"verbalized_prob": VERDICT_WRONG})


def test_a_tenants_prompt_and_a_reasoning_models_settings() -> None:
    caller = FakeCaller(replies(chat_reply("0.6")))
    signal = VerbalizedSignal(timeout_seconds=5, prompt="Q: {question}\nA: {answer}\nP(correct)?",
                              max_tokens=None, temperature=None, model="o3-mini")
    asyncio.run(measure_signals([signal], request(), [Answer(0, "Herbert")], caller))
    model, _, body = caller.received[0]
    assert model == "o3-mini"
    assert body == {"messages": [{"role": "user",
                                  "content": "Q: Who wrote Dune?\nA: Herbert\nP(correct)?"}]}


def test_an_unparseable_answer_leaves_the_feature_missing_and_is_garbage() -> None:
    caller = FakeCaller(replies(chat_reply("That depends on the edition.")))
    outcome = asyncio.run(measure_signals(
        [VerbalizedSignal(timeout_seconds=5)], request(), [Answer(0, "Herbert")], caller))
    assert outcome.features == ({},)
    assert outcome.calls[0].result is CallResult.GARBAGE
    assert outcome.calls[0].tokens == 35
    # What the model said instead is kept (cut short) for diagnosis.
    assert outcome.calls[0].detail == (
        "unreadable reply: no probability in 'That depends on the edition.'")
    assert outcome.missing_reason(0, ["verbalized_prob"]) == (
        "missing confidence features: verbalized_prob (verbalized: calls that failed: 1 garbage)")


@pytest.mark.parametrize(("caller", "result"), [
    (FakeCaller(failing()), CallResult.ERROR),
    (FakeCaller(hanging(30)), CallResult.TIMEOUT),
])
def test_failed_follow_ups_leave_the_feature_missing(caller: FakeCaller, result: CallResult) -> None:
    outcome = asyncio.run(measure_signals(
        [VerbalizedSignal(timeout_seconds=0.2)], request(), [Answer(0, "Herbert")], caller))
    assert outcome.features == ({},)
    assert [c.result for c in outcome.calls] == [result]


def test_a_request_without_a_text_question_is_not_asked_about() -> None:
    caller = FakeCaller(replies(chat_reply("90")))
    outcome = asyncio.run(measure_signals(
        [VerbalizedSignal(timeout_seconds=5)],
        request({"model": "claude", "prompt": [1, 2, 3]}, CompletionFormat),
        [Answer(0, "Herbert")], caller))
    assert outcome.features == ({},) and not caller.received
    assert "no question" in outcome.unavailable["verbalized"]


def test_the_top_k_variant_asks_once_per_request() -> None:
    caller = FakeCaller(replies(chat_reply("G1: Frank Herbert\nP1: 75\nG2: Brian Herbert\nP2: 15\nG3: Asimov\nP3: 5")))
    signal = VerbalizedSignal(timeout_seconds=5, top_k=3)
    answers = [Answer(0, "Frank Herbert"), Answer(1, "Asimov"), Answer(2, "Tolkien")]
    outcome = asyncio.run(measure_signals([signal], request(), answers, caller))
    assert [f["verbalized_topk_prob"] for f in outcome.features] == pytest.approx([0.75, 0.05, 0.05])
    [(_, _, body)] = caller.received
    assert "3 best guesses" in body["messages"][0]["content"]
    assert body["max_tokens"] == 32 * 3
    assert signal.features == {"verbalized_topk_prob"} and signal.extra_calls(3) == 1


def test_a_top_k_reply_without_guesses_leaves_the_feature_missing() -> None:
    outcome = asyncio.run(measure_signals(
        [VerbalizedSignal(timeout_seconds=5, top_k=2)], request(), [Answer(0, "Herbert")],
        FakeCaller(replies(chat_reply("Frank Herbert, surely.")))))
    assert outcome.features == ({},)
    assert outcome.calls[0].result is CallResult.GARBAGE
