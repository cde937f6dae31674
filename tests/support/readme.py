"""What the README promises, read from it: its set-up commands."""

from __future__ import annotations

import re

from tests.support.shipped_data import REPOSITORY

__all__ = ["readme_setup_commands"]


def readme_setup_commands() -> list[str]:
    """The bash blocks of the README's "Set up" section, before the local-model part."""
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    before_local_model = section.split("**Your own gateway on the local model.**")[0]
    return re.findall(r"```bash\n(.*?)\n```", before_local_model, flags=re.DOTALL)
