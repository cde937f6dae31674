"""Segments: the groups of users a tenant serves, for checking that it refuses them alike.

A request may name its segment in the header ``x-basguard-segment``, in the body's
``metadata`` (under a configured key, ``segment`` by default) or in the OpenAI ``user`` field.
Each tenant lists the segment names it reports on, and may map other values (aliases) onto
them; any other value, or none, is :data:`OTHER_SEGMENT`. So the names recorded with decisions
and exported as metric labels come from a small set fixed by the config, whatever clients send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = [
    "MAX_SEGMENTS",
    "OTHER_SEGMENT",
    "SEGMENT_HEADER",
    "SegmentPolicy",
    "SegmentSource",
    "resolve_segment",
]

OTHER_SEGMENT = "other"
"""Every request whose segment is missing or not one of the tenant's names."""
SEGMENT_HEADER = "x-basguard-segment"
MAX_SEGMENTS = 16
"""Names per tenant: each is a metric label value, so the set stays small."""
MAX_VALUE_CHARS = 256
"""A longer claimed segment is not looked up (it cannot be a configured name or alias)."""

SegmentSource = Literal["header", "metadata", "user"]
DEFAULT_SOURCES: tuple[SegmentSource, ...] = ("header", "metadata", "user")
_NAME = r"^[a-z0-9][a-z0-9_.-]{0,31}$"
SegmentName = Annotated[str, StringConstraints(pattern=_NAME)]
AliasValue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_VALUE_CHARS)]


class SegmentPolicy(BaseModel):
    """Which segments a tenant reports on, and where a request names its segment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: list[SegmentName] = Field(
        min_length=1, max_length=MAX_SEGMENTS,
        description=f"The segments to report on (at most {MAX_SEGMENTS}; lower-case letters, "
        "digits, '_', '.', '-'; up to 32 characters). Requests naming none of them, or none at "
        f"all, count as `{OTHER_SEGMENT}`.")
    aliases: dict[AliasValue, SegmentName] = Field(
        default_factory=dict, max_length=1000,
        description="Other values a client may send, each mapped to one of `names` (e.g. "
        "`business: enterprise`).")
    sources: list[SegmentSource] = Field(
        default_factory=lambda: list(DEFAULT_SOURCES), min_length=1, max_length=3,
        description="Where to look, in order; the first that holds a string is used: the "
        f"`{SEGMENT_HEADER}` header, the body's `metadata` (under `metadata_key`), the OpenAI "
        "`user` field.")
    metadata_key: str = Field(
        default="segment", min_length=1, max_length=64,
        description="The key of the body's `metadata` object that names the segment.")
    min_labels: int = Field(
        default=30, ge=1, le=1_000_000,
        description="Fewer labelled decisions than this in a segment: parity reports it as "
        "too few to judge (a rate from 30 labels is known to about ±0.18).")

    @model_validator(mode="after")
    def _consistent(self) -> SegmentPolicy:
        if OTHER_SEGMENT in self.names:
            raise ValueError(f"`{OTHER_SEGMENT}` is reserved for requests outside the named "
                             "segments; leave it out of `names`")
        if len(set(self.names)) != len(self.names):
            raise ValueError("each segment name may appear once in `names`")
        unknown = sorted({target for target in self.aliases.values()
                          if target not in self.names})
        if unknown:
            raise ValueError(f"aliases map to {', '.join(map(repr, unknown))}, which "
                             f"{'is' if len(unknown) == 1 else 'are'} not in `names`")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError("each source may appear once in `sources`")
        return self


def _claimed(source: SegmentSource, header: str | None, metadata: Any, user: Any,
             metadata_key: str) -> str | None:
    if source == "header":
        return header
    if source == "metadata":
        value = metadata.get(metadata_key) if isinstance(metadata, Mapping) else None
        return value if isinstance(value, str) else None
    return user if isinstance(user, str) else None


def resolve_segment(
    policy: SegmentPolicy | None, *, header: str | None = None, metadata: Any = None,
    user: Any = None,
) -> str:
    """The segment a request belongs to: one of ``policy.names``, or ``"other"``.

    Parameters
    ----------
    policy : SegmentPolicy or None
        The tenant's segments; None (no ``segments:`` section) puts every request in ``other``.
    header : str, optional
        The ``x-basguard-segment`` header.
    metadata : object, optional
        The request body's ``metadata`` (anything: only a mapping's string value is read).
    user : object, optional
        The request body's ``user``.

    Returns
    -------
    str
        The first source (in ``policy.sources`` order) holding a string decides: the string,
        stripped, if it is a name; the name it is an alias of; else ``other``.
    """
    if policy is None:
        return OTHER_SEGMENT
    for source in policy.sources:
        claimed = _claimed(source, header, metadata, user, policy.metadata_key)
        if claimed is None:
            continue
        value = claimed.strip()
        if len(value) > MAX_VALUE_CHARS:
            return OTHER_SEGMENT
        if value in policy.names:
            return value
        return policy.aliases.get(value, OTHER_SEGMENT)
    return OTHER_SEGMENT

