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
    FailureReason.NETWORK: "the source could not be reached; it is retried",
}


class DownloadError(RuntimeError):
    """A download that failed; `reason` says what to fix, `retryable` whether trying again may help."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(f"{message} ({HINTS[reason]})")
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return self.reason in (FailureReason.NETWORK, FailureReason.INTEGRITY)
