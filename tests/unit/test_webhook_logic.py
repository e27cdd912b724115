"""The webhook's pure parts: pod mutation as the JSON patch kopf sends back, refusals, certificates."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import kopf
import pytest
from cryptography import x509

from modelexpress_operator.webhook import certs
from modelexpress_operator.webhook.mutation import InjectionSettings, RefusedError, check, mutate

SETTINGS = InjectionSettings(server_url="mx:8001", worker_port=50051, status_ttl_secs=30)


def pod(annotations: dict[str, str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "annotations": annotations},
        "spec": {"containers": [{"name": "vllm", "image": "vllm", **container}, {"name": "side", "image": "x"}]},
    }


CACHE = {"metadata": {"name": "llama"}, "spec": {"source": "hf://a/b"}, "status": {"claimName": "llama-cache"}}


def json_patch(body: dict[str, Any], cache: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What the webhook answers: kopf turns the mutation into JSON-patch ops against the review's object."""
    patch = kopf.Patch(body=kopf.Body(copy.deepcopy(body)))
    patch.fns.append(lambda target: mutate(target, cache, SETTINGS))  # type: ignore[arg-type]
    ops: list[dict[str, Any]] = patch.as_json_patch()
    return ops


def test_admission_patch_adds_env_port_and_mount_to_the_engine_container() -> None:
    body = pod({"modelexpress.io/p2p": "enabled", "modelexpress.io/model-cache": "llama"})
    ops = json_patch(body, CACHE)
    paths = {op["path"] for op in ops}
    assert {
        "/spec/containers/0/env",
        "/spec/containers/0/ports",
        "/spec/containers/0/volumeMounts",
        "/spec/volumes",
    } <= paths
    assert not any(p.startswith("/spec/containers/1") for p in paths)
    assert all(op["op"] == "add" for op in ops)
    env = next(op["value"] for op in ops if op["path"] == "/spec/containers/0/env")
    assert {"name": "MX_WORKER_GRPC_PORT", "value": "50051"} in env
    volumes = next(op["value"] for op in ops if op["path"] == "/spec/volumes")
    assert volumes == [
        {"name": "modelexpress-cache", "persistentVolumeClaim": {"claimName": "llama-cache", "readOnly": True}}
    ]


def test_mutation_keeps_user_values_and_is_idempotent() -> None:
    body = pod({"modelexpress.io/p2p": "enabled", "modelexpress.io/worker-port": "7000",
                "modelexpress.io/container": "side"}, env=[{"name": "VLLM_PLUGINS", "value": "other"}])  # fmt: skip
    mutate(body, None, SETTINGS)
    side = body["spec"]["containers"][1]
    assert {"name": "MX_WORKER_GRPC_PORT", "value": "7000"} in side["env"]
    assert side["ports"] == [{"name": "mx-worker", "containerPort": 7000, "protocol": "TCP"}]
    assert body["spec"]["containers"][0]["env"] == [{"name": "VLLM_PLUGINS", "value": "other"}]  # not the target
    assert "volumes" not in body["spec"]  # no ModelCache named: no mount
    assert json_patch(body, None) == []  # reinvoked: nothing more to do


@pytest.mark.parametrize(
    ("annotations", "cache", "message"),
    [
        ({"modelexpress.io/model-cache": "nope"}, None, "ModelCache 'nope' does not exist in namespace ns"),
        ({"modelexpress.io/container": "ghost"}, None, "no container 'ghost' (it has vllm, side)"),
        ({"modelexpress.io/worker-port": "0"}, None, "modelexpress.io/worker-port: '0' is not a number"),
        ({"modelexpress.io/ranks-per-pod": "many"}, None, "modelexpress.io/ranks-per-pod"),
    ],
)
def test_refusals_name_the_annotation(annotations: dict[str, str], cache: Any, message: str) -> None:
    with pytest.raises(RefusedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(pod({"modelexpress.io/p2p": "enabled", **annotations}), "ns", cache)


def test_certificates_are_issued_kept_and_renewed_under_the_same_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["mx-webhook.ns.svc", "mx-webhook"]
    bundle, reason = certs.ensure(None, names, ["127.0.0.1"])
    assert reason == "no certificate yet"
    leaf = x509.load_pem_x509_certificate(bundle.cert)
    ca = x509.load_pem_x509_certificate(bundle.ca_cert)
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == names and [
        str(i) for i in sans.get_values_for_type(x509.IPAddress)
    ] == ["127.0.0.1"]
    assert certs.ensure(bundle, names, ["127.0.0.1"]) == (bundle, None)  # fine as it is
    # A new Service name, or the leaf close to expiry: reissued, same CA (the caBundle stays valid).
    renamed, why = certs.ensure(bundle, [*names, "other.ns.svc"], ["127.0.0.1"])
    assert why is not None and "other.ns.svc" in why and renamed.ca_cert == bundle.ca_cert
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    monkeypatch.setattr(certs, "_now", lambda: later)
    renewed, why = certs.ensure(bundle, names, ["127.0.0.1"])
    assert why is not None and why.startswith("it expires on") and renewed.ca_cert == bundle.ca_cert
    assert renewed.cert != bundle.cert


def test_node_preference_is_added_once_beside_the_pods_own_affinity() -> None:
    own = {"weight": 10, "preference": {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h200"]}]}}
    body = pod({"modelexpress.io/p2p": "enabled"})
    body["spec"]["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [own]}}
    mutate(body, None, SETTINGS, ["n2", "n1"])
    mutate(body, None, SETTINGS, ["n2", "n1"])
    preferred = body["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0] == own and len(preferred) == 2
    assert preferred[1]["preference"]["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1", "n2"]}
    ]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in body["spec"]["affinity"]["nodeAffinity"]
    untouched = pod({"modelexpress.io/p2p": "enabled"})
    mutate(untouched, None, SETTINGS, [])
    assert "affinity" not in untouched["spec"]


def test_peer_authentication_adds_a_projected_token_and_the_settings_once() -> None:
    body = pod({"modelexpress.io/p2p": "enabled"}, env=[{"name": "MX_PEER_AUTH", "value": "off"}])
    settings = SETTINGS.model_copy(update={"peer_trusted_user": "system:serviceaccount:mx:op"})
    mutate(body, None, settings)
    mutate(body, None, settings)
    vllm = body["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["MX_PEER_AUTH"] == "off"  # the pod's own value wins
    assert env["MX_PEER_TRUSTED_USERS"] == "system:serviceaccount:mx:op"
    assert env["MX_PEER_TOKEN_FILE"] == "/var/run/secrets/modelexpress/token"
    (volume,) = [v for v in body["spec"]["volumes"] if v["name"] == "modelexpress-peer-token"]
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "modelexpress"
    assert [m["mountPath"] for m in vllm["volumeMounts"] if m["name"] == "modelexpress-peer-token"] == [
        "/var/run/secrets/modelexpress"
    ]
    plain = pod({"modelexpress.io/p2p": "enabled"})
    mutate(plain, None, SETTINGS)
    assert "volumes" not in plain["spec"] and all(
        e["name"] != "MX_PEER_AUTH" for e in plain["spec"]["containers"][0]["env"]
    )


def test_worker_tls_mounts_the_secret_and_points_the_worker_at_it_once() -> None:
    body = pod({"modelexpress.io/p2p": "enabled"}, env=[{"name": "MX_WORKER_TLS_CA_FILE", "value": "/mine/ca.pem"}])
    settings = SETTINGS.model_copy(update={"worker_tls_secret": "modelexpress-worker-tls"})
    mutate(body, None, settings)
    mutate(body, None, settings)
    vllm = body["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["MX_WORKER_TLS_CERT_FILE"] == "/var/run/secrets/modelexpress-worker-tls/tls.crt"
    assert env["MX_WORKER_TLS_KEY_FILE"] == "/var/run/secrets/modelexpress-worker-tls/tls.key"
    assert env["MX_WORKER_TLS_CA_FILE"] == "/mine/ca.pem"  # the pod's own value wins
    assert [v for v in body["spec"]["volumes"] if v["name"] == "modelexpress-worker-tls"] == [
        {"name": "modelexpress-worker-tls", "secret": {"secretName": "modelexpress-worker-tls"}}
    ]
    mounts = [m for m in vllm["volumeMounts"] if m["name"] == "modelexpress-worker-tls"]
    assert mounts == [
        {"name": "modelexpress-worker-tls", "mountPath": "/var/run/secrets/modelexpress-worker-tls", "readOnly": True}
    ]
    assert all("volumeMounts" not in c for c in body["spec"]["containers"][1:])  # the engine container only
    plain = pod({"modelexpress.io/p2p": "enabled"})
    mutate(plain, None, SETTINGS)
    assert "volumes" not in plain["spec"]
    assert not any(e["name"].startswith("MX_WORKER_TLS") for e in plain["spec"]["containers"][0]["env"])
