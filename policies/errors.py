"""The one exception of the policies package, and the problems it carries.

::

    ValueError
    └── PolicyError          a policy or config file that cannot be used
          .problems          list[PolicyProblem], every problem found, in line order
          .path, .line,      the first problem's, for callers that show one
          .message

Each problem reads ``FILE:LINE: message`` (``FILE: message`` when no line applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PolicyError", "PolicyProblem"]


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy or config file, located by file and 1-based line."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


class PolicyError(ValueError):
    """A policy or config file that cannot be used; ``problems`` lists every problem found.

    ``str()`` is one ``FILE:LINE: message`` line per problem. ``path``, ``line`` and
    ``message`` are those of the first problem.
    """

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        if not problems:
            raise ValueError("a PolicyError needs at least one problem")
        # The same problem can be found twice (e.g. inside an anchor used by two aliases).
        self.problems: list[PolicyProblem] = list(dict.fromkeys(problems))
        first = self.problems[0]
        self.path: str = first.path
        self.line: int | None = first.line
        self.message: str = first.message
        super().__init__("\n".join(str(problem) for problem in self.problems))

    @classmethod
    def at(cls, path: str, line: int | None, message: str) -> PolicyError:
        """A PolicyError with a single problem."""
        return cls([PolicyProblem(path, line, message)])
