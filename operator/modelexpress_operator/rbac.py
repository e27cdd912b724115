"""The permissions each part needs, in one place: the chart renders them and the tests bind exactly these.

Workers only read ModelMetadata and ModelSourceSlices (the operator is their single writer). The server in
cluster mode creates, reads and deletes ModelCaches, and reviews callers' tokens when asked to. The operator
follows pods (read-only), owns ModelMetadata/ModelCache status, posts Events, and takes part in
kopf peering; it also reads CRDs and namespaces, which kopf uses to discover what to watch. It reads
no Secret but its own webhook certificate's, and only in its own namespace (OPERATOR_OWN_NAMESPACE_RULES).
tests/integration/test_zz_rbac_usage.py checks, from the API server's audit log, that the operator
uses every verb granted here and is never refused.
"""

from __future__ import annotations

from typing import Any

from modelexpress import API_GROUP
from modelexpress.api.modelmetadata import TOPOLOGY_CONFIGMAP

READ = ["get", "list", "watch"]
WEBHOOK_SECRET = "modelexpress-webhook-tls"
WEBHOOK_CONFIG = "modelexpress-webhook"

WORKER_RULES: list[dict[str, Any]] = [
    # Sources are read from a model's slices (by label, or followed with a watch); ModelMetadata for
    # the identity each slice belongs to (`modelexpress sources ls`).
    {"apiGroups": [API_GROUP], "resources": ["modelsourceslices"], "verbs": READ},
    {"apiGroups": [API_GROUP], "resources": ["modelmetadatas"], "verbs": ["get", "list"]},
    # Its own node's zone and domain, from the one ConfigMap the operator keeps (no Node access).
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [TOPOLOGY_CONFIGMAP], "verbs": ["get"]},
]

WORKER_PEER_AUTH_RULES: list[dict[str, Any]] = [
    # Only with MX_PEER_AUTH=kubernetes: a source checks each caller's token (cluster-scoped) and reads
    # the caller's pod (bound per workers namespace) to see that it is opted in.
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
]

CACHE_JOB_RULES: list[dict[str, Any]] = [
    # A download Job reports its progress on its ModelCache, nothing else.
    {"apiGroups": [API_GROUP], "resources": ["modelcaches/status"], "verbs": ["patch"]},
]

SERVER_RULES: list[dict[str, Any]] = [
    # The server in cluster mode: ensure creates or reuses a ModelCache and follows its status (patch:
    # the retry annotation when asked again for a model whose cache failed), list reads them, delete
    # deletes them (the operator's finalizer frees the storage).
    {"apiGroups": [API_GROUP], "resources": ["modelcaches"], "verbs": ["get", "list", "create", "patch", "delete"]},
]

SERVER_TOKEN_REVIEW_RULES: list[dict[str, Any]] = [
    # Only when callers must present a ServiceAccount token (MX_SERVER_REQUIRE_TOKEN); cluster-scoped.
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
]

OPERATOR_RULES: list[dict[str, Any]] = [
    # create: for an identity that opted-in workers report and nobody declared; patch: labels and
    # kopf's own progress annotations and finalizers.
    {"apiGroups": [API_GROUP], "resources": ["modelmetadatas"], "verbs": [*READ, "create", "patch"]},
    {"apiGroups": [API_GROUP], "resources": ["modelmetadatas/status"], "verbs": ["patch"]},
    # The entries themselves, in slices of at most 100 that it makes, fills and deletes (read back by
    # label at start-up; watched, so that a slice deleted or edited behind its back is written again).
    {"apiGroups": [API_GROUP], "resources": ["modelsourceslices"], "verbs": ["list", "watch", "create", "delete"]},
    {"apiGroups": [API_GROUP], "resources": ["modelsourceslices/status"], "verbs": ["patch"]},
    {"apiGroups": [API_GROUP], "resources": ["modelcaches"], "verbs": [*READ, "patch"]},
    {"apiGroups": [API_GROUP], "resources": ["modelcaches/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    # Node topology: the labels of nodes running opted-in pods, kept in one ConfigMap per namespace
    # (create cannot be limited by name; patch is).
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
    # A Ready ModelCache on node-local storage records its volume's node (the PV's node affinity).
    {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [TOPOLOGY_CONFIGMAP], "verbs": ["patch"]},
    # ModelCache: the PVC and the sizing and download Jobs it owns (deleted one by one on eviction);
    # the Jobs' ServiceAccount is only checked for existence. No access to Secrets here: a missing
    # credentials Secret is reported from the Job pod's status, and the Jobs read the credentials.
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "create", "delete"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
    # The admission webhook keeps its own webhook configuration's caBundle current.
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations"],
        "resourceNames": [WEBHOOK_CONFIG],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings", "clusterkopfpeerings"], "verbs": [*READ, "patch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]

OPERATOR_OWN_NAMESPACE_RULES: list[dict[str, Any]] = [
    # A Role in the operator's own namespace only: the webhook's self-managed CA and serving certificate
    # live in one Secret there, which the operator creates (create cannot be limited to a name), reads
    # and renews.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [WEBHOOK_SECRET], "verbs": ["get", "update"]},
]
