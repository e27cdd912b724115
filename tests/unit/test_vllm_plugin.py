"""The vLLM plugin's parts that run without vLLM (it cannot be installed on this CPU machine): the
entry point, registration when vLLM is absent or disabled, the identity of a rank, the feature gate."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import pytest

from modelexpress.loader import feature_gate
from modelexpress.vllm_plugin import LOAD_FORMATS, register
from modelexpress.vllm_plugin.identity import vllm_identity


def test_entry_point_names_the_register_function() -> None:
    (plugin,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "modelexpress"]
    assert plugin.load() is register
    assert LOAD_FORMATS == ("mx", "mx-source", "mx-target")


def test_register_without_vllm_or_when_disabled_is_a_logged_no_op(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with caplog.at_level(logging.INFO, logger="modelexpress.vllm"):
        register()
    assert "vLLM is not importable" in caplog.text
    caplog.clear()
    monkeypatch.setenv("MX_REGISTER_LOADERS", "0")
    with caplog.at_level(logging.INFO, logger="modelexpress.vllm"):
        register()
    assert "MX_REGISTER_LOADERS=0" in caplog.text


def test_identity_of_a_rank() -> None:
    import torch

    identity = vllm_identity("meta-llama/Llama-3.1-70B", None, "0.11.0", torch.bfloat16, "fp8", 8, 2, 3, 1,
                             capability=(9, 0))  # fmt: skip
    assert identity.rank == 11  # pipeline stage 1 x TP 8 + TP rank 3
    assert (identity.dtype, identity.gpu_architecture, identity.revision) == ("bfloat16", "sm90", "main")
    other = vllm_identity("meta-llama/Llama-3.1-70B", None, "0.11.0", torch.bfloat16, "fp8", 8, 2, 3, 1,
                          capability=(10, 0))  # fmt: skip
    assert identity.differences(other) == ["gpu_architecture: 'sm90' != 'sm100'"]


@pytest.mark.parametrize(
    ("config", "gated"),
    [
        ({"architectures": ["LlamaForCausalLM"]}, False),
        ({"architectures": ["DeepseekV3ForCausalLM"], "kv_lora_rank": 512}, True),
        ({"architectures": ["SomethingNew"], "kv_lora_rank": 256}, True),
        ({"architectures": ["Wrapper"], "text_config": {"architectures": ["DeepseekV2ForCausalLM"]}}, True),
        (None, False),
    ],
)
def test_mla_feature_gate(config: dict[str, object] | None, gated: bool) -> None:
    reason = feature_gate(config, environ={})
    assert (reason is not None) == gated
    if gated:
        assert reason is not None and "multi-head latent attention" in reason and "MX_SKIP_FEATURE_CHECK" in reason
        assert feature_gate(config, environ={"MX_SKIP_FEATURE_CHECK": "1"}) is None
