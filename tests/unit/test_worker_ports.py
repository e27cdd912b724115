"""Ranks sharing a pod listen on the pod's consecutive WorkerService ports, as the operator dials them."""

from __future__ import annotations

import pytest

from modelexpress.config.worker import WorkerSettings, WorkerSettingsError


def test_rank_k_on_the_node_listens_on_the_port_plus_k() -> None:
    settings = WorkerSettings(worker_grpc_port=50051)
    assert [settings.for_local_rank(k).worker_grpc_port for k in range(4)] == [50051, 50052, 50053, 50054]
    assert settings.worker_grpc_port == 50051  # the pod's settings are left as they were


def test_a_free_port_stays_free_for_every_rank() -> None:
    assert WorkerSettings(worker_grpc_port=0).for_local_rank(3).worker_grpc_port == 0


def test_a_rank_past_the_last_port_names_the_variable() -> None:
    with pytest.raises(WorkerSettingsError, match=r"MX_WORKER_GRPC_PORT=65534: local rank 2 would listen on 65536"):
        WorkerSettings(worker_grpc_port=65534).for_local_rank(2)
