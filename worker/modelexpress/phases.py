"""Where a replica's start goes: seconds per load phase, for the loader's summary line and the
`modelexpress_load_phase_seconds{phase=...}` histogram.

Each phase is the wall time of its own work, so phases that run beside others overlap them: `link`
(and `artifacts`) run in the background while the engine builds its model; `verify` counts only what
is left to check after the last byte arrived, since checksums are computed while READs are in flight.
Whoever creates a `Phases` observes it once (`metrics.observe_phases`), when its load is over, so one
load is one observation per phase however many pieces of work it timed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, get_args

Phase = Literal["link", "manifest", "transfer", "verify", "disk", "artifacts", "postprocess"]
PHASES: tuple[str, ...] = get_args(Phase)
"""In the order a start goes through them: linking sources (status, manifest, NIXL metadata and
connection), matching manifests and planning chunks, READs, the verification left after the last READ,
loading from disk (all of it, or the tensors no source delivered), compiled artifacts from a peer,
the engine's post-processing of the loaded weights."""


@dataclass
class Phases:
    """Seconds spent in each phase of one load (phases not met are absent)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: Phase, seconds: float) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase {phase!r}: expected one of {', '.join(PHASES)}")
        self.seconds[phase] = self.seconds.get(phase, 0.0) + max(0.0, seconds)

    @contextmanager
    def timing(self, phase: Phase) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)

    def summary(self) -> str:
        """`link 0.12s, transfer 0.30s, verify 0.02s`, in the order of PHASES."""
        return ", ".join(f"{p} {self.seconds[p]:.2f}s" for p in PHASES if p in self.seconds)
