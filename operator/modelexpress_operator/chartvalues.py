"""The Helm chart's values, as a model: `make generate` writes `values.schema.json` from it, so Helm
refuses a bad value with its path before anything is rendered, and the defaults live in one place."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from modelexpress.api.common import PATTERN_MESSAGE, KubeModel, Quantity, ResourceRequirements, Toleration

AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"]


class Image(KubeModel):
    repository: str = Field(min_length=1)
    """Image repository."""
    tag: str = ""
    """Image tag (empty: the chart's appVersion)."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the image."""


class Metrics(KubeModel):
    enabled: bool = True
    """Serve Prometheus metrics and create the metrics Service."""
    port: int = Field(default=8080, ge=1, le=65535)
    """Metrics port of the operator."""


class ServerMetrics(KubeModel):
    enabled: bool = True
    """Serve the server's Prometheus metrics (a `metrics` port on its pods and Service)."""
    port: int = Field(default=9090, ge=1, le=65535)
    """Metrics port of the server."""


Interval = Annotated[str, Field(pattern=r"^[0-9]+(ms|s|m|h)$")]


class ServiceMonitors(KubeModel):
    enabled: bool = False
    """ServiceMonitors for the operator's and the server's metrics (Prometheus Operator). The operator's
    keeps its `namespace` label (honorLabels): it names the ModelCache's or ModelMetadata's namespace."""
    interval: Interval = "30s"
    """Scrape interval."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to each monitor (what your Prometheus's serviceMonitorSelector matches)."""


class WorkerPodMonitor(KubeModel):
    enabled: bool = False
    """A PodMonitor in each workers namespace for opted-in pods (`modelexpress.io/p2p: enabled`): vLLM's
    /metrics, where the workers' `modelexpress_*` metrics are relayed."""
    port: str = Field(default="http", min_length=1, max_length=15)
    """Name of the engine container's port serving /metrics (vLLM's API port)."""
    path: str = Field(default="/metrics", pattern=r"^/")
    """Path of the metrics."""
    interval: Interval = "30s"
    """Scrape interval."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to the PodMonitors (what your Prometheus's podMonitorSelector matches)."""


class PrometheusRuleValues(KubeModel):
    enabled: bool = False
    """A PrometheusRule with the alerts of docs/monitoring.md (pulls falling back to disk, checksum
    mismatches, refused peers, a failed ModelCache, no active operator, failing status writes, stale
    sources)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to the rule (what your Prometheus's ruleSelector matches)."""


class GrafanaDashboard(KubeModel):
    enabled: bool = False
    """The ModelExpress dashboard as a ConfigMap that Grafana's dashboard sidecar loads."""
    labels: dict[str, str] = Field(default_factory=lambda: {"grafana_dashboard": "1"})
    """Labels of the ConfigMap (the sidecar's label; kube-prometheus-stack's default is shown)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the ConfigMap (e.g. `grafana_folder` for the sidecar's folder)."""


class Monitoring(KubeModel):
    service_monitors: ServiceMonitors = Field(default_factory=ServiceMonitors)
    """Scraping of the operator and the server."""
    pod_monitor: WorkerPodMonitor = Field(default_factory=WorkerPodMonitor)
    """Scraping of the workers."""
    prometheus_rule: PrometheusRuleValues = Field(default_factory=PrometheusRuleValues)
    """Alerts."""
    grafana_dashboard: GrafanaDashboard = Field(default_factory=GrafanaDashboard)
    """The Grafana dashboard."""


class TopologyValues(KubeModel):
    zone_label: str = Field(default="topology.kubernetes.io/zone", min_length=1, max_length=317)
    """Node label naming a node's zone; targets prefer sources in their own zone."""
    domain_label: str = Field(default="nvidia.com/gpu.clique", max_length=317)
    """Node label naming a node's rack or NVLink domain, nearer than the zone (empty: no domain tier)."""


class OperatorValues(KubeModel):
    replicas: int = Field(default=1, ge=1, le=9)
    """Operator replicas; more than one run with kopf peering (one active, the others standing by)."""
    scope: Literal["cluster", "namespace"] = "cluster"
    """`cluster`: a ClusterRole, every namespace watched. `namespace`: Roles in `watchNamespaces` only."""
    watch_namespaces: list[str] = Field(default_factory=list)
    """With scope `namespace`: the namespaces to watch (default: the release namespace)."""
    status_ttl_secs: int = Field(default=30, ge=1)
    """A worker not heard from for this long is marked Stale (MX_STATUS_TTL_SECS)."""
    anti_affinity: bool = False
    """Spread replicas over nodes (required anti-affinity on the hostname)."""
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "1Gi"}
        )
    )
    """Resources of the operator container."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the operator's pods must match."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations of the operator's pods."""
    log_verbose: bool = False
    """kopf's verbose logging."""
    metrics: Metrics = Field(default_factory=Metrics)
    """Prometheus metrics."""
    topology: TopologyValues = Field(default_factory=TopologyValues)
    """Where sources are, for targets to pull from the nearest (node labels the operator reads)."""


class CertManager(KubeModel):
    enabled: bool = False
    """Have cert-manager issue the webhook's certificate (a self-signed Issuer in the release namespace)
    and inject its CA; otherwise the operator keeps its own CA in a Secret."""


class WebhookValues(KubeModel):
    enabled: bool = True
    """Inject settings into pods annotated `modelexpress.io/p2p: enabled`."""
    port: int = Field(default=9443, ge=1, le=65535)
    """HTTPS port of the webhook in the operator pod."""
    failure_policy: Literal["Ignore", "Fail"] = "Ignore"
    """`Ignore`: pods are created untouched while the operator is down. `Fail`: they are refused."""
    timeout_seconds: int = Field(default=5, ge=1, le=30)
    """How long the API server waits for the webhook."""
    namespace_selector: dict[str, Any] = Field(default_factory=dict)
    """Which namespaces' pods are sent to the webhook (empty: all but kube-system and the release's)."""
    cert_manager: CertManager = Field(default_factory=CertManager)
    """Certificates from cert-manager."""


class ServerCache(KubeModel):
    claim_name: str = ""
    """An existing ReadWriteMany PVC for the server's models (empty: create one)."""
    size: Quantity = "100Gi"
    """Size of the PVC the chart creates."""
    storage_class_name: str = ""
    """StorageClass of the PVC the chart creates (empty: the cluster default)."""
    access_modes: list[AccessMode] = Field(default_factory=lambda: list[AccessMode](["ReadWriteMany"]))
    """Access modes of the PVC the chart creates (ReadWriteMany: download Jobs and the server share it)."""


class ServerValues(KubeModel):
    enabled: bool = True
    """Run the ModelExpress server (gRPC on `port`) in cluster mode: ensure = a ModelCache."""
    replicas: int = Field(default=1, ge=1, le=9)
    """Server replicas (stateless: they share the ModelCaches and the cache claim)."""
    port: int = Field(default=8001, ge=1, le=65535)
    """gRPC port of the server and its Service."""
    require_token: bool = False
    """Callers of ensure/delete must present a ServiceAccount token (TokenReview)."""
    cache: ServerCache = Field(default_factory=ServerCache)
    """The claim ModelCaches created by the server download into."""
    metrics: ServerMetrics = Field(default_factory=ServerMetrics)
    """Prometheus metrics."""
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "2Gi"}
        )
    )
    """Resources of the server container."""


class WorkerNetworkPolicy(KubeModel):
    enabled: bool = False
    """A NetworkPolicy in each workers namespace: the WorkerService ports of opted-in pods reachable only
    from opted-in pods and the operator (the webhook labels opted-in pods `modelexpress.io/p2p`).
    RDMA over InfiniBand/RoCE bypasses the CNI: there, peer authentication is what holds."""
    port: int = Field(default=50051, ge=1, le=65535)
    """First WorkerService port (the pods' `modelexpress.io/worker-port`)."""
    end_port: int = Field(default=50114, ge=1, le=65535)
    """Last WorkerService port (one per rank of a pod: port + ranks-per-pod - 1)."""
    open_ports: list[int] = Field(default_factory=lambda: [8000])
    """Ports of opted-in pods that stay open to every client (the engine's own API)."""


class WorkerTLS(KubeModel):
    enabled: bool = False
    """WorkerService over TLS: the webhook mounts Secret `secretName` (`tls.crt`, `tls.key`, `ca.crt`) into
    every opted-in pod and sets `MX_WORKER_TLS_*`; workers serve TLS and every caller, the operator
    included, verifies the name `modelexpress-worker` against `ca.crt`. NIXL's own transfers are not
    covered (RDMA and UCX carry the bytes)."""
    secret_name: str = Field(default="modelexpress-worker-tls", min_length=1, max_length=253)
    """The Secret, in every workers namespace and in the release namespace (the operator reads `ca.crt`)."""
    generate: bool = True
    """The chart issues a CA and one certificate for the name `modelexpress-worker` and writes the Secret
    into each of those namespaces; an upgrade keeps the ones it finds. False: bring your own Secret of
    that name (e.g. from cert-manager) in each of them."""
    validity_days: int = Field(default=3650, ge=1, le=36500)
    """Lifetime of the generated CA and certificate."""


class WorkersValues(KubeModel):
    namespaces: list[str] = Field(default_factory=list)
    """Namespaces where vLLM workers and cache Jobs run: each gets the workers' read-only Role on
    ModelMetadata and the cache Jobs' ServiceAccount (default: the release namespace)."""
    service_account: str = "modelexpress-worker"
    """ServiceAccount the workers' Role is bound to (set it as the vLLM pods' serviceAccountName)."""
    network_policy: WorkerNetworkPolicy = Field(default_factory=WorkerNetworkPolicy)
    """Who may reach the WorkerService ports of opted-in pods."""
    peer_auth: bool = True
    """Sources admit only opted-in pods of their namespace (and the operator): the webhook gives each
    opted-in pod `MX_PEER_AUTH=kubernetes` and a projected token, the workers get what the check needs
    (TokenReviews, reading pods in the workers namespaces), the operator a token of its own."""
    tls: WorkerTLS = Field(default_factory=WorkerTLS)
    """TLS for the WorkerService (the control traffic between workers: manifests, agent metadata, artifacts)."""


class ChartValues(KubeModel):
    """Values of the modelexpress chart."""

    image: Image = Field(default_factory=lambda: Image(repository="ghcr.io/modelexpress/modelexpress-operator"))
    """The operator and server image."""
    worker_image: Image = Field(default_factory=lambda: Image(repository="ghcr.io/modelexpress/modelexpress-worker"))
    """The worker image: download Jobs run it; vLLM images build on it."""
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list)
    """Pull secrets of every pod the chart creates."""
    hf_endpoint: str = ""
    """Hugging Face endpoint or mirror for download Jobs (empty: huggingface.co)."""
    operator: OperatorValues = Field(default_factory=OperatorValues)
    """The kopf operator."""
    webhook: WebhookValues = Field(default_factory=WebhookValues)
    """The admission webhook."""
    server: ServerValues = Field(default_factory=ServerValues)
    """The ModelExpress server."""
    workers: WorkersValues = Field(default_factory=WorkersValues)
    """Where workers run."""
    monitoring: Monitoring = Field(default_factory=Monitoring)
    """Prometheus Operator and Grafana objects (each off by default; their CRDs must exist)."""


def values_schema() -> dict[str, Any]:
    """JSON schema of the values, as Helm enforces it (draft 7 subset, no $ref)."""
    schema = ChartValues.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].split("/")[-1]])
            return {k: inline(v) for k, v in node.items() if k not in ("title", PATTERN_MESSAGE)}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    inlined["$schema"] = "http://json-schema.org/draft-07/schema#"
    return inlined
