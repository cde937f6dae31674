"""Names of features measured over an answer's first K tokens: ``token_prob@16``.

A stream gate decides a streamed answer after its first K tokens, so its calibrator is fitted
on the same features computed over the first K tokens of labelled answers (fewer when the
answer is shorter). Such a feature is named ``FEATURE@K``: ``basguard collect --prefix-tokens``
records them next to the full-answer features, ``basguard calibrate fit --prefix K`` reads them,
and the artifact names them, so an artifact says which K it was fitted for.
"""

from __future__ import annotations

__all__ = ["PREFIX_SEPARATOR", "prefix_feature", "split_prefix_feature"]

PREFIX_SEPARATOR = "@"


def prefix_feature(name: str, tokens: int) -> str:
    """The name of feature ``name`` measured over the first ``tokens`` tokens.

    Parameters
    ----------
    name : str
        A full-answer feature name, e.g. ``token_prob``.
    tokens : int
        K, at least 1.

    Returns
    -------
    str
        ``name@K``.

    Raises
    ------
    ValueError
        If ``tokens`` is below 1 or ``name`` already names a prefix feature.
    """
    if tokens < 1:
        raise ValueError(f"a prefix has at least 1 token, got {tokens}")
    if PREFIX_SEPARATOR in name:
        raise ValueError(f"{name!r} already names a prefix feature")
    return f"{name}{PREFIX_SEPARATOR}{tokens}"


def split_prefix_feature(name: str) -> tuple[str, int | None]:
    """The full-answer feature and K of a prefix feature name; K is None for any other name.

    Parameters
    ----------
    name : str
        A feature name, e.g. ``token_prob@16`` or ``token_prob``.

    Returns
    -------
    tuple of (str, int or None)
        ``("token_prob", 16)`` for ``token_prob@16``; ``(name, None)`` when ``name`` has no
        ``@K`` suffix with K a positive integer.
    """
    base, separator, suffix = name.rpartition(PREFIX_SEPARATOR)
    if not separator or not base or not suffix.isascii() or not suffix.isdigit():
        return name, None
    tokens = int(suffix)
    return (base, tokens) if tokens >= 1 else (name, None)
