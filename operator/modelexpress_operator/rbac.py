"""The permissions each part needs, in one place: the chart renders them and the tests bind exactly these.

Workers only read ModelMetadata (the operator is the single writer of its status). The operator
follows pods (read-only), owns ModelMetadata/ModelCache status, posts Events, and takes part in
kopf peering; it also reads CRDs and namespaces, which kopf uses to discover what to watch.
"""

from __future__ import annotations

from typing import Any

from modelexpress import API_GROUP

READ = ["get", "list", "watch"]

WORKER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [API_GROUP], "resources": ["modelmetadatas"], "verbs": READ},
]

OPERATOR_RULES: list[dict[str, Any]] = [
    # create: for an identity that opted-in workers report and nobody declared; patch: labels and
    # kopf's own progress annotations and finalizers.
    {"apiGroups": [API_GROUP], "resources": ["modelmetadatas"], "verbs": [*READ, "create", "patch"]},
    {"apiGroups": [API_GROUP], "resources": ["modelmetadatas/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [API_GROUP], "resources": ["modelcaches"], "verbs": [*READ, "patch"]},
    {"apiGroups": [API_GROUP], "resources": ["modelcaches/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": READ},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings", "clusterkopfpeerings"], "verbs": [*READ, "patch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]
