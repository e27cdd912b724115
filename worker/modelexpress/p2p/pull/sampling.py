"""Which tensors a pull checks: all (`full`), a random sample holding a fraction of the bytes
(`sampled`), or none (`off`); a sampled pull that meets a corrupt tensor escalates to `full`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def choose_sample(sizes: dict[str, int], fraction: float) -> set[str]:
    """A random set of tensors holding at least `fraction` of the bytes (new for every pull)."""
    names = list(sizes)
    random.SystemRandom().shuffle(names)
    goal = fraction * sum(sizes.values())
    chosen: set[str] = set()
    covered = 0
    for name in names:
        if covered >= goal and chosen:
            break
        chosen.add(name)
        covered += sizes[name]
    return chosen


@dataclass
class Policy:
    """The verification policy in force; `escalate` changes it mid-pull."""

    name: str = "full"
    sample: set[str] | None = None
    """The tensors to check under `sampled` (None: all)."""
    late: set[str] = field(default_factory=set)
    """Unsampled tensors part of which arrived unhashed before an escalation: checked whole once complete."""

    @classmethod
    def of(cls, name: str, sizes: dict[str, int], fraction: float) -> Policy:
        return cls(name, choose_sample(sizes, fraction) if name == "sampled" else None)

    def checks(self, name: str) -> bool:
        return self.name != "off" and (self.sample is None or name in self.sample)

    def escalate(self, partly_arrived: list[str]) -> None:
        """From now on every tensor is checked; those partly arrived unhashed are checked whole."""
        self.late = {name for name in partly_arrived if not self.checks(name)}
        self.name, self.sample = "full", None

    def describe(self, sizes: dict[str, int]) -> str:
        """The policy for a report: `sampled (12% of bytes)` says how much the sample covered."""
        if self.name != "sampled":
            return self.name
        total = sum(sizes.values())
        sampled = sum(map(sizes.__getitem__, self.sample or ()))
        return f"sampled ({sampled / total if total else 1.0:.0%} of bytes)"
