"""UCX settings: our defaults apply only where the user set nothing; transports are shown on request."""

from __future__ import annotations

import pytest

from modelexpress.p2p.nixl_engine import configure_ucx_environment


def test_get_zcopy_is_enabled_unless_the_user_chose() -> None:
    env: dict[str, str] = {"UCX_TLS": "rc,cuda_copy"}
    effective = configure_ucx_environment(env)
    assert effective["UCX_CUDA_IPC_ENABLE_GET_ZCOPY"] == "y"
    assert effective["UCX_TLS"] == "rc,cuda_copy"  # passed through untouched
    assert "UCX_PROTO_INFO" not in effective
    chosen = {"UCX_CUDA_IPC_ENABLE_GET_ZCOPY": "n"}
    assert configure_ucx_environment(chosen)["UCX_CUDA_IPC_ENABLE_GET_ZCOPY"] == "n"


def test_transports_are_shown_on_request_only() -> None:
    assert configure_ucx_environment({}, show_transports=True)["UCX_PROTO_INFO"] == "y"
    assert configure_ucx_environment({"UCX_PROTO_INFO": "n"}, show_transports=True)["UCX_PROTO_INFO"] == "n"


def test_nixl_logs_go_through_ours_not_to_standard_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from modelexpress.p2p.nixl_engine import NixlEngine

    monkeypatch.delenv("NIXL_LOG_LEVEL", raising=False)
    NixlEngine()
    out = capsys.readouterr().out
    assert "NIXL" not in out and "Backend UCX" not in out  # stdout stays clean for --format json
    nixl_logger = logging.getLogger("nixl")
    assert nixl_logger.propagate and not nixl_logger.handlers and nixl_logger.level == logging.WARNING
