"""WorkerService over TLS: a pull with the right CA, refusals with a wrong one or none.

The certificate comes from the operator's own CA machinery (`webhook/certs.py`, as for the webhook) or
from the Secret the chart issues with `workers.tls.enabled` (Helm's engine), for the name every worker
carries (`modelexpress-worker`): workers are dialled by pod IP and checked for that name. Real gRPC and
real NIXL on host memory, in one process.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from modelexpress.config.worker import WorkerSettings
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import NoSourceError, PullOptions, pull
from modelexpress.p2p.source import SourceWorker
from modelexpress_operator.webhook.certs import issue, new_ca
from tests.helpers.chart import render

IDENTITY = WorkerIdentity(model_name="test/tls")
SPECS = [TensorSpec(f"w{i}", "float32", (128, 64)) for i in range(3)]


def _operator_issued(directory: Path) -> None:
    ca_cert, ca_key = new_ca("modelexpress-worker-ca")
    bundle = issue(ca_cert, ca_key, ["modelexpress-worker"])
    (directory / "ca.crt").write_bytes(ca_cert)
    (directory / "tls.crt").write_bytes(bundle.cert)
    (directory / "tls.key").write_bytes(bundle.key)


def _chart_issued(directory: Path) -> None:
    """The Secret the chart writes with `workers.tls.enabled` (Helm's own genCA and genSignedCert), as the
    kubelet would mount it into an opted-in pod."""
    docs = render({"workers": {"tls": {"enabled": True}}})
    (secret,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "modelexpress-worker-tls"]
    for key, value in secret["data"].items():
        (directory / key).write_bytes(base64.b64decode(value))


@pytest.fixture(params=[_operator_issued, _chart_issued], ids=["operator-ca", "chart-secret"])
def tls_source(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SourceWorker, Path, dict[str, torch.Tensor]]]:
    request.param(tmp_path)
    layout = allocate_pool(SPECS)
    for i, tensor in enumerate(layout.tensors.values()):
        tensor.copy_(torch.arange(math.prod(tensor.shape), dtype=torch.float32).reshape(tensor.shape) * (i + 1))
    settings = WorkerSettings(
        worker_host="127.0.0.1",
        worker_tls_cert_file=str(tmp_path / "tls.crt"),
        worker_tls_key_file=str(tmp_path / "tls.key"),
    )
    source = SourceWorker(IDENTITY, layout, settings)
    source.start()
    try:
        yield source, tmp_path / "ca.crt", {k: v.clone() for k, v in layout.tensors.items()}
    finally:
        source.stop()


def _pull(endpoint: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    engine = NixlEngine()
    try:
        target = allocate_pool(SPECS)
        engine.register(target)
        result = pull(target, IDENTITY, [endpoint], engine, PullOptions(connect_timeout=5))
        return target.tensors, result.sources
    finally:
        engine.deregister_all()


def test_a_pull_over_tls_with_the_right_ca_and_refusals_without_it(
    tls_source: tuple[SourceWorker, Path, dict[str, torch.Tensor]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    source, ca, original = tls_source
    assert source.server.tls
    monkeypatch.setenv("MX_WORKER_TLS_CA_FILE", str(ca))
    tensors, sources = _pull(source.endpoint)
    assert sources == [source.endpoint]
    assert all(torch.equal(tensors[name], tensor) for name, tensor in original.items())

    other_ca, _ = new_ca("someone-else")
    (tmp_path / "other.crt").write_bytes(other_ca)
    monkeypatch.setenv("MX_WORKER_TLS_CA_FILE", str(tmp_path / "other.crt"))
    with pytest.raises(NoSourceError, match=source.endpoint):  # the handshake fails: not a source we trust
        _pull(source.endpoint)
    monkeypatch.delenv("MX_WORKER_TLS_CA_FILE")
    with pytest.raises(NoSourceError, match=source.endpoint):  # plaintext to a TLS port: no answer
        _pull(source.endpoint)


def test_plaintext_is_said_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    source = SourceWorker(IDENTITY, allocate_pool(SPECS), WorkerSettings(worker_host="127.0.0.1"))
    source.start()
    try:
        assert "plaintext: MX_WORKER_TLS_CERT_FILE unset" in caplog.text and not source.server.tls
    finally:
        source.stop()


def test_half_a_certificate_pair_is_one_clear_error(tmp_path: Path) -> None:
    from modelexpress.config.worker import WorkerSettingsError

    with pytest.raises(WorkerSettingsError, match="MX_WORKER_TLS_CERT_FILE and MX_WORKER_TLS_KEY_FILE go together"):
        SourceWorker(IDENTITY, allocate_pool(SPECS), WorkerSettings(worker_tls_cert_file=str(tmp_path / "x")))
