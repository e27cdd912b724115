"""Where nodes sit: each node's zone and domain from its labels, for source entries and for workers.

Workers hold no Node read rights. The operator reads the labels (`topology_zone_label`,
`topology_domain_label`), records them on each source entry of ModelMetadata, and keeps, in every
namespace with opted-in pods, the ConfigMap `modelexpress-topology` (node name -> zone and domain)
from which a target learns its own place when its pod has been scheduled: long before its engine
asks for sources. Node labels are cached for a few minutes; a ConfigMap entry is written only when
it is new or changed.
"""

from __future__ import annotations

import logging
import time

from kubernetes import client

from modelexpress.api.modelmetadata import TOPOLOGY_CONFIGMAP, NodeTopology
from modelexpress_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
_NODE_TTL_SECS = 300.0


class Topology:
    """Node labels, read and cached; the per-namespace ConfigMap, kept in step."""

    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.core = client.CoreV1Api(api)
        self.zone_label = settings.topology_zone_label
        self.domain_label = settings.topology_domain_label or None  # the chart's empty value: no domain tier
        self._nodes: dict[str, tuple[float, NodeTopology | None]] = {}
        self._written: dict[tuple[str, str], str] = {}  # (namespace, node) -> JSON written there

    def cached(self, node: str | None) -> tuple[bool, NodeTopology | None]:
        """(True, what `of(node)` would return) when that needs no API read now; (False, None) otherwise."""
        if not node:
            return True, None
        hit = self._nodes.get(node)
        if hit is not None and time.monotonic() - hit[0] < _NODE_TTL_SECS:
            return True, hit[1]
        return False, None

    def of(self, node: str | None) -> NodeTopology | None:
        """The node's zone and domain (None when unknown: no such node, or no labels to read)."""
        known, place = self.cached(node)
        if known or not node:
            return place
        try:
            labels = self.core.read_node(node).metadata.labels or {}
        except client.ApiException as exc:
            log.debug("node %s: labels not read (%s)", node, exc.reason)
            found = None
        else:
            zone = labels.get(self.zone_label)
            domain = labels.get(self.domain_label) if self.domain_label else None
            found = NodeTopology(zone=zone, domain=domain) if zone or domain else None
        self._nodes[node] = (time.monotonic(), found)
        return found

    def publish(self, namespace: str, node: str) -> None:
        """Make the namespace's ConfigMap hold the node's place (a no-op when it already does)."""
        found = self.of(node)
        if found is None:
            return
        value = found.model_dump_json(exclude_none=True)
        if self._written.get((namespace, node)) == value:
            return
        patch = {"data": {node: value}}
        try:
            self.core.patch_namespaced_config_map(TOPOLOGY_CONFIGMAP, namespace, patch)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(
                    name=TOPOLOGY_CONFIGMAP, labels={"app.kubernetes.io/managed-by": "modelexpress-operator"}
                ),
                data={node: value},
            )
            try:
                self.core.create_namespaced_config_map(namespace, body)
            except client.ApiException as again:
                if again.status != 409:  # created meanwhile (another event of the same burst): patch it
                    raise
                self.core.patch_namespaced_config_map(TOPOLOGY_CONFIGMAP, namespace, patch)
        self._written[(namespace, node)] = value
        log.info("%s/%s: node %s is %s", namespace, TOPOLOGY_CONFIGMAP, node, value)
