"""What a pull is asked to do and what it answers: options, result, errors, the callables it takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from modelexpress.phases import Phases

Fallback = Callable[[dict[str, torch.Tensor], list[str]], None]
"""Fills the named tensors of the dict in place (e.g. from disk)."""
Progress = Callable[[int, int], None]
Discover = Callable[[], list[str]]
"""Endpoints of the Ready sources now (a fresh registry lookup)."""

Verification = Literal["full", "sampled", "off"]
VERIFICATIONS: tuple[str, ...] = get_args(Verification)


class PullError(RuntimeError):
    """The tensors could not be obtained; nothing is loaded."""


class NoSourceError(PullError):
    """No usable source and no fallback."""


@dataclass(frozen=True)
class PullOptions:
    chunk_bytes: int | None = None
    """Bytes per READ (None: `default_chunk_bytes` of the target layout)."""
    max_inflight: int = 4
    transfer_timeout: float = 60.0
    connect_timeout: float = 10.0
    expected_pods: dict[str, str] = field(default_factory=dict)
    """endpoint -> pod UID the registry recorded there: a source answering for another pod (its pod
    was replaced and the address reused) is refused, never taken for its previous incarnation."""
    verification: Verification = "full"
    """full: every tensor's checksum; sampled: a random `sample_fraction` of the bytes, and every tensor
    once one sampled tensor fails; off: none (the bytes are trusted as they arrive)."""
    sample_fraction: float = 0.1
    busy_wait: float = 0.0
    """Seconds to wait, asking for sources again, when every source is busy (needs `discover`)."""
    max_sources: int = 0
    """Sources striped over at once, taken in the order given (0: all); the others are a reserve."""

    def __post_init__(self) -> None:
        if self.verification not in VERIFICATIONS:
            raise ValueError(f"verification {self.verification!r}: expected one of {', '.join(VERIFICATIONS)}")
        if not 0 < self.sample_fraction <= 1:
            raise ValueError(f"sample_fraction {self.sample_fraction}: expected a fraction in (0, 1]")


@dataclass
class PullResult:
    bytes: int
    seconds: float
    failed_sources: dict[str, str]
    retried_chunks: int = 0
    refetched_tensors: int = 0
    fell_back: list[str] = field(default_factory=list)
    verification: str = "full"
    """The policy that held at the end (a sampled pull that met a corrupt tensor ends `full`)."""
    verified_bytes: int = 0
    """Bytes of the pulled tensors whose checksums were checked."""
    unchecked_tensors: int = 0
    """Pulled tensors the policy accepted without a check."""
    phases: Phases = field(default_factory=Phases)
    """Seconds in link, manifest, transfer, verify and disk (the tensors no source delivered)."""
    served: dict[str, int] = field(default_factory=dict)
    """Bytes each source delivered, by endpoint (READs that failed and were read again elsewhere excluded)."""

    @property
    def sources(self) -> list[str]:
        """The sources that delivered bytes, in the order they were linked."""
        return list(self.served)

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0
