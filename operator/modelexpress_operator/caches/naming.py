"""The names of a ModelCache's Jobs (one per attempt of a generation, a sizing Job or a download Job),
and reading the attempt back from a name: deterministic, so a reconcile run twice creates nothing twice."""

from __future__ import annotations

import re

from modelexpress.api import RETRY_ANNOTATION


def job_name(cache: str, generation: int, attempt: int) -> str:
    return f"{cache[:40]}-dl-g{generation}-{attempt}"


def sizing_job_name(cache: str, generation: int, attempt: int) -> str:
    return f"{cache[:40]}-size-g{generation}-{attempt}"


def is_sizing(job: str | None) -> bool:
    return "-size-g" in (job or "")


def attempt_of(job: str | None, generation: int) -> int:
    """The attempt a Job of `generation` is (0 when it is another generation's, or none)."""
    match = re.search(rf"-(?:dl|size)-g{generation}-(\d+)$", job or "")
    return int(match.group(1)) if match else 0


def retry_command(name: str) -> str:
    """How a user asks for one more attempt without changing the spec (the retry annotation)."""
    return f'kubectl annotate mxcache {name} {RETRY_ANNOTATION}="$(date +%s)" --overwrite'
