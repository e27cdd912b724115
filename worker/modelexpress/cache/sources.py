"""Model source URIs: `hf://org/name`, `ngc://org/team/model:version`, `s3://`, `gs://`, `az://`, or a local path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from modelexpress.cache.errors import DownloadError, FailureReason

Provider = Literal["hf", "ngc", "s3", "gs", "az", "local"]
_HF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_NGC_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*){1,2}(:[A-Za-z0-9._-]+)?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}(/.*)?$")


@dataclass(frozen=True)
class ModelSource:
    """A parsed source: provider plus its name (repo id, NGC path, bucket/prefix or absolute path)."""

    provider: Provider
    name: str

    @property
    def uri(self) -> str:
        return self.name if self.provider == "local" else f"{self.provider}://{self.name}"


def parse_source(text: str) -> ModelSource:
    """Parse a source URI; a bare `org/name` means Hugging Face. Errors name the accepted forms."""
    text = text.strip()
    if "\0" in text:
        raise DownloadError(FailureReason.INVALID_SOURCE, f"source {text!r} contains a NUL byte")
    if text.startswith("/"):
        if ".." in text.split("/"):
            raise DownloadError(FailureReason.INVALID_SOURCE, f"source {text!r}: a local path must not contain '..'")
        return ModelSource("local", text)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "hf", text
    rest = rest.strip("/")
    if scheme == "hf" and _HF_NAME.match(rest):
        return ModelSource("hf", rest)
    if scheme == "ngc" and _NGC_NAME.match(rest):
        return ModelSource("ngc", rest)
    if scheme in ("s3", "gs", "az") and _BUCKET.match(rest) and ".." not in rest.split("/"):
        return ModelSource(scheme, rest)  # type: ignore[arg-type]
    raise DownloadError(
        FailureReason.INVALID_SOURCE,
        f"source {text!r} is not one of hf://org/name, ngc://org/[team/]model[:version], "
        "s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or an absolute path",
    )
