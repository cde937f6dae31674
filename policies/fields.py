"""The field types every model of the policy file shares, and the model they all derive from."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Strict, StringConstraints

__all__ = ["ArtifactPath", "Number", "StrictModel", "TenantName"]

_TENANT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
def _check_tenant_name(value: Any) -> Any:
    # Runs before the pattern so the message says what is allowed, not the regex.
    if isinstance(value, str) and not re.fullmatch(_TENANT_NAME, value):
        raise ValueError(
            "a tenant name starts with a letter or digit and has only letters, digits, '_', '.' "
            "and '-' (at most 64 characters)"
        )
    return value


TenantName = Annotated[
    str, StringConstraints(pattern=_TENANT_NAME), BeforeValidator(_check_tenant_name)
]
ArtifactPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
# Strict: YAML reads `no` as False, which pydantic would take as 0.0, and a quoted "0.8" is a
# typo worth reporting. NaN would slip past the range checks, so it is refused too.
Number = Annotated[float, Strict(), AllowInfNan(False)]


class StrictModel(BaseModel):
    """A frozen model that rejects unknown keys; every model of the policy file derives from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
