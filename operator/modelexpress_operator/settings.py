"""Operator settings, from `MX_OPERATOR_*` environment variables (and `MX_STATUS_TTL_SECS`, shared with workers)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelexpress import PEER_TOKEN_FILE
from modelexpress.config.environment import describe_environment_error
from modelexpress.errors import UserError


class OperatorSettings(BaseSettings):
    """How the operator follows workers and where it serves metrics."""

    model_config = SettingsConfigDict(env_prefix="MX_OPERATOR_", extra="ignore", use_attribute_docstrings=True)

    status_ttl_secs: float = Field(
        default=30.0, gt=0, validation_alias=AliasChoices("MX_STATUS_TTL_SECS", "MX_OPERATOR_STATUS_TTL_SECS")
    )
    """A worker not heard from for this long (no status or heartbeat) is marked Stale."""
    default_worker_port: int = Field(default=50051, ge=1, le=65535)
    """WorkerService port of opted-in pods that do not name one in `modelexpress.io/worker-port`."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve Prometheus metrics on this port (unset: none; the chart sets 8080)."""
    peering_namespace: str | None = None
    """Namespace of the KopfPeering object of a namespaced operator (cluster-wide: ClusterKopfPeering)."""
    peering_lifetime_secs: int = Field(default=60, ge=2)
    """How long a replica counts as alive after its last peering keep-alive (failover takes up to this)."""
    reconnect_max_secs: float = Field(default=5.0, gt=0)
    """Longest pause between attempts to reach a worker whose status stream broke."""

    worker_image: str = "ghcr.io/modelexpress/modelexpress-worker:0.1.0"
    """Image of ModelCache download Jobs (the worker image)."""
    downloader_command: str = "modelexpress"
    """Executable in the worker image that runs `cache download`."""
    job_service_account: str = "modelexpress-cache-job"
    """ServiceAccount of download Jobs, allowed to patch `modelcaches/status` (progress); when it does
    not exist in the namespace, Jobs run without a token and report no progress."""
    job_backoff_limit: int = Field(default=4, ge=0, le=20)
    """Pod retries inside one download Job (exponential backoff by the Job controller)."""
    retry_limit: int = Field(default=3, ge=1, le=100)
    """Download Jobs per ModelCache generation before a retryable failure is final."""
    retry_interval_secs: float = Field(default=300, gt=0)
    """Pause before a new download Job replaces one that failed for a retryable reason."""
    eviction_check_secs: float = Field(default=300, gt=0)
    """How often each ModelCache with `eviction.unusedThreshold` is checked for eviction."""
    hf_endpoint: str | None = None
    """Hugging Face endpoint (mirror) given to download Jobs as HF_ENDPOINT."""

    namespace: str | None = None
    """The operator's own namespace (the chart sets it from the downward API; default: the
    ServiceAccount's namespace file, else `default`)."""
    server_url: str | None = None
    """MODEL_EXPRESS_URL injected into opted-in pods (default: modelexpress-server.<namespace>.svc:8001)."""
    peer_auth: bool = False
    """Have the webhook make opted-in workers check who reads their weights (`MX_PEER_AUTH=kubernetes`,
    a projected token); the operator itself is then admitted by its ServiceAccount's name."""
    service_account: str = "modelexpress-operator"
    """The operator's ServiceAccount (in its namespace): the user every source admits."""
    worker_tls_secret: str | None = Field(default=None, min_length=1, max_length=253)
    """A Secret (`tls.crt`, `tls.key`, `ca.crt`) in the workers' namespaces that the webhook mounts into
    opted-in pods so that they serve the WorkerService over TLS and verify their peers (unset: plaintext).
    The operator verifies workers with `MX_WORKER_TLS_CA_FILE`."""
    peer_token_file: str = PEER_TOKEN_FILE
    """The operator's token for workers that admit authenticated peers only (a projected ServiceAccount
    token of audience `modelexpress`; absent: none is sent)."""
    topology_zone_label: str = "topology.kubernetes.io/zone"
    """Node label naming a node's zone: targets prefer sources in their own zone."""
    topology_domain_label: str | None = "nvidia.com/gpu.clique"
    """Node label naming a node's rack or NVLink domain, nearer than the zone (default: the NVLink
    clique NVIDIA's GPU feature discovery sets; unset: no domain tier)."""
    webhook_enabled: bool = False
    """Serve the admission webhook that injects settings into opted-in pods."""
    webhook_port: int = Field(default=9443, ge=1, le=65535)
    """HTTPS port of the admission webhook."""
    webhook_bind: str = "0.0.0.0"
    """Address the webhook listens on."""
    webhook_cert_dir: str | None = None
    """A directory with tls.crt and tls.key (e.g. from cert-manager): used as they are. Unset: the
    operator keeps its own CA and serving certificate in `webhook_secret` and renews them."""
    webhook_secret: str = "modelexpress-webhook-tls"
    """Secret (in the operator's namespace) holding the self-managed CA and serving certificate."""
    webhook_service: str = "modelexpress-webhook"
    """Service in front of the webhook: its DNS names go into the serving certificate."""
    webhook_extra_sans: list[str] = Field(default_factory=list)
    """More DNS names or IPs for the serving certificate (e.g. 127.0.0.1 outside a cluster)."""
    webhook_config_name: str = "modelexpress-webhook"
    """MutatingWebhookConfiguration whose caBundle the operator keeps in step with its CA."""

    def own_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        return path.read_text().strip() if path.exists() else "default"

    @property
    def heartbeat_secs(self) -> float:
        """How often workers are asked to resend their status: three beats per TTL."""
        return max(0.2, self.status_ttl_secs / 3)


class OperatorSettingsError(UserError, ValueError):
    """Bad `MX_OPERATOR_*` values; the message names each variable, its value and what is accepted."""


def load_operator_settings() -> OperatorSettings:
    """`OperatorSettings` from the environment, or `OperatorSettingsError` naming each bad variable."""
    try:
        return OperatorSettings()
    except ValidationError as exc:
        raise OperatorSettingsError(describe_environment_error(exc, OperatorSettings, "MX_OPERATOR_")) from None
