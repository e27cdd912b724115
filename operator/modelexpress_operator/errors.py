"""Turning invalid specs into kopf errors whose message names the field and what is wrong."""

from __future__ import annotations

import kopf
from pydantic import ValidationError


def invalid_spec(exc: ValidationError) -> kopf.PermanentError:
    """A PermanentError naming every bad field (`spec.tensorParallelSize: ...`); retrying cannot fix it."""
    problems = "; ".join(f"spec.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors())
    return kopf.PermanentError(f"invalid spec: {problems}")
