"""What a benchmark prints before its figures: the date, the commit and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}"


def commit() -> str:
    """The checkout's short commit, with ``+changes`` when tracked files differ from it."""
    result = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(REPOSITORY), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True, check=False)
    return result.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def provenance() -> str:
    return f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, {machine()}"
