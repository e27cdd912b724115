"""Download failures with a reason a user (or the operator's status conditions) can act on."""

from __future__ import annotations

from enum import StrEnum


class FailureReason(StrEnum):
    """Why a download failed; the operator turns these into condition reasons."""

    INVALID_SOURCE = "InvalidSource"
    UNAUTHORIZED = "Unauthorized"
    NOT_FOUND = "NotFound"
    NO_SPACE = "InsufficientStorage"
    INTEGRITY = "IntegrityError"
    NETWORK = "NetworkError"


HINTS = {
    FailureReason.INVALID_SOURCE: "fix the source URI",
    FailureReason.UNAUTHORIZED: "check the credentials (HF_TOKEN, NGC_API_KEY, cloud credentials or credentialsSecretRef)",
    FailureReason.NOT_FOUND: "check the model name and revision",
    FailureReason.NO_SPACE: "give the cache more storage or evict models",
    FailureReason.INTEGRITY: "the source served bytes that do not match its own metadata; retry or report it upstream",
    FailureReason.NETWORK: "the source could not be reached; trying again may help",
}


class DownloadError(RuntimeError):
    """A download that failed; `reason` says what to fix, `retryable` whether trying again may help."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(f"{message} ({HINTS[reason]})")
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return self.reason in (FailureReason.NETWORK, FailureReason.INTEGRITY)


EXIT_CODES = {
    FailureReason.NETWORK: 1,
    FailureReason.INTEGRITY: 1,
    FailureReason.INVALID_SOURCE: 2,
    FailureReason.NOT_FOUND: 3,
    FailureReason.UNAUTHORIZED: 4,
    FailureReason.NO_SPACE: 5,
}
"""Exit codes of `cache download|pull`: 1 is worth a retry; 2-5 are not (cache Jobs fail at once on them)."""


def exit_code_for(reason: str) -> int:
    """The exit code of a failure reason as a server reports it (unknown reasons: 1)."""
    return EXIT_CODES.get(FailureReason(reason), 1) if reason in set(FailureReason) else 1
