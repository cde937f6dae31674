"""Every confidence signal by name, the features they yield, and which ones a calibrator needs.

A new signal is one module plus its entry in :data:`SIGNALS`; :data:`FEATURE_KINDS` and the
checks below follow from the signals' own declarations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from calibrators.signals import ScoreKind, ScoreSpec
from policies.confidence import SignalSettings
from proxy.signals.base import ConfidenceSignal, Json
from proxy.signals.consistency import ConsistencySignal
from proxy.signals.judge import JudgeSignal
from proxy.signals.logprobs import LogprobsSignal
from proxy.signals.verbalized import VerbalizedSignal
from proxy.wire.formats import WireFormat

__all__ = [
    "FEATURE_KINDS",
    "FEATURE_SIGNALS",
    "SIGNALS",
    "SignalConfigError",
    "SignalPlan",
    "build_signals",
    "extra_calls_per_request",
    "plan_signals",
    "signals_to_run",
    "uncalibrated_spec",
    "upstream_body",
]

#: Every signal by its name in the config.
SIGNALS: Mapping[str, type[ConfidenceSignal]] = {
    cls.name: cls for cls in (LogprobsSignal, ConsistencySignal, VerbalizedSignal, JudgeSignal)
}


def _feature_table() -> tuple[dict[str, ScoreKind], dict[str, str]]:
    kinds: dict[str, ScoreKind] = {}
    owners: dict[str, str] = {}
    for name, cls in SIGNALS.items():
        for feature, kind in cls.feature_kinds.items():
            if feature in owners:
                raise RuntimeError(
                    f"signals {owners[feature]!r} and {name!r} both yield {feature!r}; a feature "
                    "name must identify its signal"
                )
            kinds[feature], owners[feature] = kind, name
    return kinds, owners


_KINDS, _OWNERS = _feature_table()
#: The kind of every feature any signal yields.
FEATURE_KINDS: Mapping[str, ScoreKind] = _KINDS
#: The signal that yields each feature.
FEATURE_SIGNALS: Mapping[str, str] = _OWNERS


class SignalConfigError(ValueError):
    """The signals enabled for a model cannot give what its calibrator reads."""


def build_signals(settings: SignalSettings) -> tuple[ConfidenceSignal, ...]:
    """The signals ``settings`` enables, configured, in the order listed."""
    return tuple(SIGNALS[name].from_settings(settings) for name in settings.signals)


def signals_to_run(
    feature_names: Iterable[str], enabled: Sequence[ConfidenceSignal]
) -> tuple[ConfidenceSignal, ...]:
    """Exactly the enabled signals that yield a feature the calibrator reads.

    Parameters
    ----------
    feature_names : iterable of str
        The features the calibrator reads (``FittedCalibrator.feature_names``).
    enabled : sequence of ConfidenceSignal
        The signals the tenant enables for the model.

    Returns
    -------
    tuple of ConfidenceSignal
        The signals to run, in the enabled order.

    Raises
    ------
    SignalConfigError
        When a feature is yielded by no enabled signal; the message names the signal that
        would yield it.
    """
    needed = set(feature_names)
    chosen = tuple(signal for signal in enabled if signal.features & needed)
    given = set().union(*(signal.features for signal in chosen))
    missing = sorted(needed - given)
    if missing:
        names = ", ".join(s.name for s in enabled) or "none"
        problems = []
        for feature in missing:
            owner = FEATURE_SIGNALS.get(feature)
            if owner is None:
                problems.append(f"{feature!r}, which no signal yields")
            elif owner in {s.name for s in enabled}:
                condition = SIGNALS[owner].feature_conditions.get(feature, "with other settings")
                problems.append(f"{feature!r}, which the {owner} signal yields only {condition}")
            else:
                problems.append(f"{feature!r}, which the {owner} signal yields")
        raise SignalConfigError(
            f"the calibrator reads {'; '.join(problems)}; enabled signals: {names}. "
            "Enable the signal under `confidence: signals:` or use a calibrator fitted on the "
            "enabled signals' features"
        )
    return chosen


def uncalibrated_spec(enabled: Sequence[ConfidenceSignal]) -> ScoreSpec:
    """The feature read as P(correct) without a fitted calibrator: the first signal's default."""
    if not enabled:
        raise SignalConfigError("no confidence signal is enabled")
    feature = enabled[0].uncalibrated_feature
    return ScoreSpec(feature, FEATURE_KINDS[feature])


def upstream_body(
    signals: Sequence[ConfidenceSignal], body: Json, fmt: type[WireFormat],
    wanted: frozenset[str],
) -> Json:
    """The main upstream request with what every signal needs of it."""
    for signal in signals:
        body = signal.upstream_body(body, fmt, wanted)
    return body


def extra_calls_per_request(signals: Sequence[ConfidenceSignal], choices: int = 1) -> int:
    """Extra upstream calls per request of ``choices`` choices (``basguard policy check``)."""
    return sum(signal.extra_calls(choices) for signal in signals)


@dataclass(frozen=True)
class SignalPlan:
    """What one tenant runs for one model: resolved once at load, used per request."""

    enabled: tuple[ConfidenceSignal, ...]
    """Every signal the settings enable (``policy check`` lists them)."""
    to_run: tuple[ConfidenceSignal, ...]
    """The enabled signals whose features are wanted."""
    wanted: frozenset[str]
    """The features to compute: the calibrator's, or every enabled one's."""

    def upstream_body(self, body: Json, fmt: type[WireFormat]) -> Json:
        """The main request with what the signals to run need of it."""
        return upstream_body(self.to_run, body, fmt, self.wanted)

    def extra_calls(self, choices: int = 1) -> int:
        """Extra upstream calls per request of ``choices`` choices."""
        return extra_calls_per_request(self.to_run, choices)


def plan_signals(
    settings: SignalSettings, feature_names: Iterable[str] | None = None
) -> SignalPlan:
    """The signals to run for a model, checked against the features its calibrator reads.

    Parameters
    ----------
    settings : SignalSettings
        The tenant's settings for the model (``ConfidenceConfig.for_model``).
    feature_names : iterable of str, optional
        The features the model's calibrator reads; None runs every enabled signal for all its
        features (``basguard collect``). Without a fitted calibrator, pass
        ``[uncalibrated_spec(build_signals(settings)).field]``.

    Returns
    -------
    SignalPlan

    Raises
    ------
    SignalConfigError
        When a feature is yielded by no enabled signal.
    """
    enabled = build_signals(settings)
    if feature_names is None:
        wanted = frozenset().union(*(signal.features for signal in enabled))
        return SignalPlan(enabled, enabled, wanted)
    wanted = frozenset(feature_names)
    return SignalPlan(enabled, signals_to_run(wanted, enabled), wanted)
