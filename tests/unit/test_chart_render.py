"""The chart rendered by Helm's engine with each values file: every object validates strictly against
the Kubernetes 1.36 schemas, the RBAC is exactly rbac.py's, and bad values are refused by the schema."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from modelexpress_operator import rbac
from tests.helpers.chart import CHART, VALUES_FILES, ChartError, render, validate, values_file


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("name", VALUES_FILES)
def test_each_values_file_renders_valid_objects(name: str) -> None:
    docs = render(values_file(name))
    for doc in docs:
        validate(doc)
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    operator = deployments["modelexpress-operator"]["spec"]["template"]["spec"]
    container = operator["containers"][0]
    assert operator["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (webhook,) = by_kind(docs, "MutatingWebhookConfiguration")
    assert webhook["metadata"]["name"] == rbac.WEBHOOK_CONFIG
    assert webhook["webhooks"][0]["clientConfig"]["service"]["path"] == "/inject-modelexpress"
    worker_roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "modelexpress-worker"]
    assert worker_roles and all(r["rules"] == rbac.WORKER_RULES for r in worker_roles)


def test_production_values_spread_replicas_and_use_cert_manager() -> None:
    docs = render(values_file("values-production.yaml"))
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "modelexpress-operator")
    spec = operator["spec"]
    assert spec["replicas"] == 3 and "--peering=modelexpress" in spec["template"]["spec"]["containers"][0]["args"]
    assert spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert {d["kind"] for d in docs} >= {"ServiceMonitor", "Certificate", "Issuer", "ClusterKopfPeering"}
    review = {
        r["metadata"]["name"]: r["rules"]
        for r in by_kind(docs, "ClusterRole")
        if r["metadata"]["name"].endswith("token-review")
    }
    assert review["modelexpress-server-token-review"] == rbac.SERVER_TOKEN_REVIEW_RULES
    # Readers of the weights are checked too: the workers may review tokens and read pods; the operator
    # holds a token of audience modelexpress for the workers it follows.
    assert review["modelexpress-worker-token-review"] == [
        r for r in rbac.WORKER_PEER_AUTH_RULES if "tokenreviews" in r["resources"]
    ]
    (peer,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "modelexpress-worker-peer-auth"]
    assert peer["rules"] == [r for r in rbac.WORKER_PEER_AUTH_RULES if "pods" in r["resources"]]
    pod = spec["template"]["spec"]
    (token,) = [v for v in pod["volumes"] if v["name"] == "peer-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "modelexpress"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MX_OPERATOR_PEER_AUTH"] == "true" and env["MX_OPERATOR_SERVICE_ACCOUNT"] == "modelexpress-operator"
    # The WorkerService ports: opted-in pods and the operator only; the engine's API stays open.
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"modelexpress.io/p2p": "enabled"}}
    workers_only, api = policy["spec"]["ingress"]
    assert workers_only["ports"] == [{"protocol": "TCP", "port": 50051, "endPort": 50114}]
    assert workers_only["from"][0] == {"podSelector": {"matchLabels": {"modelexpress.io/p2p": "enabled"}}}
    assert workers_only["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert api == {"ports": [{"protocol": "TCP", "port": 8000}]}
    assert not by_kind(render({}), "NetworkPolicy")  # opt-in


def test_worker_tls_issues_one_certificate_for_the_workers_name_into_every_namespace_that_needs_it() -> None:
    docs = render({"workers": {"namespaces": ["team-a", "team-b"], "tls": {"enabled": True}}}, namespace="mx-system")
    secrets = {d["metadata"]["namespace"]: d for d in by_kind(docs, "Secret")}
    assert sorted(secrets) == ["mx-system", "team-a", "team-b"]  # the operator's namespace and each workers one
    assert len({tuple(sorted(d["data"].items())) for d in secrets.values()}) == 1  # one CA, one certificate
    data = {k: base64.b64decode(v) for k, v in secrets["team-a"]["data"].items()}
    assert secrets["team-a"]["type"] == "kubernetes.io/tls"
    cert, ca = x509.load_pem_x509_certificate(data["tls.crt"]), x509.load_pem_x509_certificate(data["ca.crt"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["modelexpress-worker"]  # the name callers check (workers are dialled by pod IP)
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(data["tls.key"], password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= dt.timedelta(days=3649)
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "modelexpress-operator")
    pod = operator["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MX_OPERATOR_WORKER_TLS_SECRET"] == "modelexpress-worker-tls"
    assert env["MX_WORKER_TLS_CA_FILE"] == "/var/run/secrets/modelexpress-worker-tls/ca.crt"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "worker-ca"]
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # never the workers' key
    for doc in docs:
        validate(doc)
    # Bring your own (cert-manager): the operator is configured the same, the chart writes no Secret.
    own = render({"workers": {"tls": {"enabled": True, "generate": False, "secretName": "mine"}}})
    assert not by_kind(own, "Secret")
    operator = next(d for d in own if d["kind"] == "Deployment" and d["metadata"]["name"] == "modelexpress-operator")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MX_OPERATOR_WORKER_TLS_SECRET"] == "mine"
    assert not by_kind(render({}), "Secret")  # off by default


def test_cluster_scope_grants_exactly_the_operator_rules_and_namespace_scope_splits_them() -> None:
    docs = render({})
    (role,) = [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == "modelexpress-operator"]
    assert role["rules"] == rbac.OPERATOR_RULES
    assert not any("secrets" in rule["resources"] for rule in role["rules"])  # no cluster-wide Secret access
    (own,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "modelexpress-operator-own"]
    assert own["rules"] == rbac.OPERATOR_OWN_NAMESPACE_RULES and own["metadata"]["namespace"] == "mx-system"
    (bound,) = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"] == "modelexpress-operator-own"]
    assert bound["subjects"][0]["name"] == "modelexpress-operator"
    scoped = render({"operator": {"scope": "namespace", "watchNamespaces": ["team-a", "team-b"]}})
    for doc in scoped:
        validate(doc)
    bindings = [b for b in by_kind(scoped, "RoleBinding") if b["roleRef"]["name"] == "modelexpress-operator-namespaced"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    args = next(d for d in by_kind(scoped, "Deployment") if d["metadata"]["name"] == "modelexpress-operator")
    assert "--namespace=team-a" in args["spec"]["template"]["spec"]["containers"][0]["args"]
    cluster = next(r for r in by_kind(scoped, "ClusterRole") if r["metadata"]["name"].endswith("-cluster"))
    assert {res for rule in cluster["rules"] for res in rule["resources"]} == {
        "customresourcedefinitions", "namespaces", "clusterkopfpeerings", "mutatingwebhookconfigurations"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"operator": {"replicas": 0}}, "replicas"),
        ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"server": {"port": 70000}}, "port"),
        ({"operator": {"unknownOption": True}}, "unknownOption"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ChartError) as refused:
        render(values)
    assert field in str(refused.value) and "\n" not in str(refused.value)


def test_make_chart_renders_validates_and_refuses_in_one_line(tmp_path: Path) -> None:
    """The user-facing way to check the chart without helm: hack/chart.py (`make chart`)."""
    tool = [sys.executable, str(CHART.parents[1] / "hack" / "chart.py")]
    good = subprocess.run(
        [*tool, "-f", str(CHART / "values-production.yaml"), "--set", "operator.replicas=2", "-n", "inference-ops"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    docs = [d for d in yaml.safe_load_all(good.stdout) if d]
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "modelexpress-operator")
    assert operator["spec"]["replicas"] == 2 and operator["metadata"]["namespace"] == "inference-ops"
    assert "each valid for Kubernetes 1.36.0" in good.stderr
    bad_values = tmp_path / "bad.yaml"
    bad_values.write_text("webhook:\n  failurePolicy: Sometimes\n")
    for extra in (["-f", str(bad_values)], ["--set", "operator.replicas=0"], ["--set", "nonsense"]):
        bad = subprocess.run([*tool, *extra], capture_output=True, text=True, timeout=120, check=False)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), bad.stderr
        assert "Traceback" not in bad.stderr and not bad.stdout


def test_kind_e2e_manifests_and_values_validate() -> None:
    """What hack/kind-e2e.sh applies: the chart with its kind values, the fake hub and the workers."""
    import yaml

    from tests.helpers.chart import CHART

    e2e = CHART.parents[1] / "hack" / "e2e"
    values = {**values_file("values-development.yaml"), **yaml.safe_load((e2e / "values-kind.yaml").read_text())}
    docs = render(values)
    for doc in docs:
        validate(doc)
    for name in ("fake-hub.yaml", "workers.yaml"):
        for doc in yaml.safe_load_all((e2e / name).read_text()):
            validate(doc)
    from modelexpress.api.modelcache import ModelCache
    from modelexpress.api.modelmetadata import ModelMetadata

    cache, metadata = yaml.safe_load_all((e2e / "model.yaml").read_text())
    ModelCache.model_validate(cache)
    ModelMetadata.model_validate(metadata)
    workers = list(yaml.safe_load_all((e2e / "workers.yaml").read_text()))
    assert all(w["spec"]["serviceAccountName"] == values["workers"].get("serviceAccount", "modelexpress-worker")
               for w in workers)  # fmt: skip
    assert all(w["metadata"]["annotations"]["modelexpress.io/p2p"] == "enabled" for w in workers)


def test_example_manifests_validate() -> None:
    """examples/: the vLLM deployments (single-node TP8, multi-node TP8xPP2) and the ModelCache."""
    import yaml

    from modelexpress.api.modelcache import ModelCache
    from tests.helpers.chart import CHART

    examples = CHART.parents[1] / "examples"
    for name in ("vllm-single-node-tp8.yaml", "vllm-multi-node-tp8-pp2.yaml"):
        docs = list(yaml.safe_load_all((examples / name).read_text()))
        for doc in docs:
            validate(doc)
        pods = [d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
        assert all(p["metadata"]["annotations"]["modelexpress.io/ranks-per-pod"] == "8" for p in pods)
        assert all("--load-format=mx" in " ".join(p["spec"]["containers"][0].get("args", [])).replace(" mx", "=mx")
                   for p in pods)  # fmt: skip
    ModelCache.model_validate(yaml.safe_load((examples / "modelcache-llama.yaml").read_text()))


def test_node_e2e_manifests_and_values_validate() -> None:
    """What `make e2e-node` applies (tests/e2e): the chart with its values, the ModelCache and the vLLM
    StatefulSet, with the image names hack/images.sh builds by default."""
    import yaml

    from modelexpress.api.modelcache import ModelCache
    from tests.helpers.chart import CHART

    e2e = CHART.parents[1] / "tests" / "e2e"
    values = {**yaml.safe_load((e2e / "values-node.yaml").read_text()), "hfEndpoint": "http://192.0.2.2:8080"}
    for doc in render(values):
        validate(doc)
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert container["imagePullPolicy"] == "Never" and container["image"].startswith("local/")
    ModelCache.model_validate(yaml.safe_load((e2e / "manifests" / "modelcache.yaml").read_text()))
    service, statefulset = yaml.safe_load_all((e2e / "manifests" / "vllm.yaml").read_text())
    validate(service)
    validate(statefulset)
    template = statefulset["spec"]["template"]
    assert template["metadata"]["annotations"]["modelexpress.io/p2p"] == "enabled"
    assert template["spec"]["containers"][0]["image"] == "local/modelexpress-worker:dev"
    assert statefulset["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady"
