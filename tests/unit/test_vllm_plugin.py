"""The vLLM plugin's registration (with the real vLLM installed, and as if it were absent or of an
unsupported version), the identity of a rank, and the name a model is published under."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from modelexpress.loader.naming import ModelNameError, content_digest, name_model
from modelexpress.vllm_plugin import LOAD_FORMATS, register
from modelexpress.vllm_plugin.identity import vllm_identity
from modelexpress.vllm_plugin.versions import unsupported
from tests.harness.processes import require_vllm
from tests.helpers.tiny_llama import write_tiny_llama


def test_entry_point_names_the_register_function() -> None:
    (plugin,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "modelexpress"]
    assert plugin.load() is register
    assert LOAD_FORMATS == ("mx", "mx-source", "mx-target")


def test_register_without_vllm_or_when_disabled_is_a_logged_no_op(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError, as where it is absent
    with caplog.at_level(logging.INFO, logger="modelexpress.vllm"):
        register()
    assert "vLLM is not importable" in caplog.text
    caplog.clear()
    monkeypatch.setenv("MX_REGISTER_LOADERS", "0")
    with caplog.at_level(logging.INFO, logger="modelexpress.vllm"):
        register()
    assert "MX_REGISTER_LOADERS=0" in caplog.text


def test_register_with_the_real_vllm_adds_the_three_formats_and_the_builtin_one_finds_this_package() -> None:
    require_vllm()
    from vllm.config.load import LoadConfig
    from vllm.model_executor.model_loader import get_model_loader

    from modelexpress.vllm_plugin.loader import LOADERS, ModelExpressLoader, MxModelLoader

    register()
    assert set(LOADERS) == set(LOAD_FORMATS)
    for load_format in LOAD_FORMATS:
        loader = get_model_loader(LoadConfig(load_format=load_format))
        assert type(loader) is LOADERS[load_format] and isinstance(loader, MxModelLoader)
    builtin = get_model_loader(LoadConfig(load_format="modelexpress"))
    assert type(builtin._loader) is ModelExpressLoader  # vLLM's wrapper imported ours


@pytest.mark.parametrize(
    ("version", "ok"),
    [("0.32.0", True), ("0.32.1+cpu", True), ("0.33.0", True), ("0.33.2.dev7+g1234", True),
     ("0.31.2", False), ("0.34.0", False), ("1.0.0", False), ("main", False)],
)  # fmt: skip
def test_supported_vllm_versions(version: str, ok: bool) -> None:
    reason = unsupported(version)
    assert (reason is None) == ok
    if not ok:
        assert reason is not None and version in reason and "0.32 and 0.33" in reason


def test_an_unsupported_vllm_fails_at_the_load_format_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    require_vllm()
    import vllm
    from vllm.config.load import LoadConfig
    from vllm.model_executor.model_loader import get_model_loader

    monkeypatch.setattr(vllm, "__version__", "0.31.0")
    try:
        register()
        with pytest.raises(RuntimeError, match=r"vLLM 0\.31\.0 is installed; the ModelExpress load formats support"):
            get_model_loader(LoadConfig(load_format="mx"))
    finally:
        monkeypatch.undo()
        register()


def test_identity_of_a_rank() -> None:
    identity = vllm_identity("meta-llama/Llama-3.1-70B", None, "0.32.0", torch.bfloat16, "fp8", 8, 2, 3, 1,
                             capability=(9, 0))  # fmt: skip
    assert identity.rank == 11  # pipeline stage 1 x TP 8 + TP rank 3
    assert (identity.dtype, identity.gpu_architecture, identity.revision) == ("bfloat16", "sm90", "main")
    other = vllm_identity("meta-llama/Llama-3.1-70B", None, "0.32.0", torch.bfloat16, "fp8", 8, 2, 3, 1,
                          capability=(10, 0))  # fmt: skip
    assert identity.differences(other) == ["gpu_architecture: 'sm90' != 'sm100'"]


# --- naming --------------------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_a_directory_is_named_by_its_content_wherever_it_is_mounted(tmp_path: Path) -> None:
    first = write_tiny_llama(tmp_path / "models" / "llama")
    second = write_tiny_llama(tmp_path / "mnt" / "elsewhere")
    other = write_tiny_llama(tmp_path / "other", seed=1)  # same architecture, other weights
    named = name_model(str(first), None)
    assert named.name == "local/llama" and named.revision.startswith("content-")
    assert name_model(str(second), None) == name_model(str(first), None).__class__(
        named.name, named.revision, f"content of {second}"
    )
    assert name_model(str(other), None).revision != named.revision


def test_a_weight_change_outside_the_header_changes_the_digest(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "m")
    before = content_digest(model)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle of the tensor data
    weights.write_bytes(bytes(data))
    assert content_digest(model) != before


def test_a_hub_snapshot_is_its_repo_at_its_commit(tmp_path: Path) -> None:
    snapshot = write_tiny_llama(tmp_path / "cache" / "models--meta-llama--Llama-3.1-8B" / "snapshots" / COMMIT)
    named = name_model(str(snapshot), None)
    assert (named.name, named.revision) == ("meta-llama/Llama-3.1-8B", COMMIT)


def test_a_hub_id_is_pinned_from_the_cache_or_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refs = tmp_path / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(COMMIT)
    assert name_model("org/model", None, hub_cache=tmp_path).revision == COMMIT
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNameError, match=r"revision 'v2' of org/model could not be pinned.*MX_MODEL_NAME"):
        name_model("org/model", "v2", hub_cache=tmp_path)


def test_an_explicit_name_wins_and_a_bad_one_names_the_variable(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "m")
    named = name_model(str(model), None, explicit_name="team/llama-ft", explicit_revision="v3")
    assert (named.name, named.revision) == ("team/llama-ft", "v3")
    with pytest.raises(ModelNameError, match="MX_MODEL_NAME: '/models/x' is not a model name"):
        name_model(str(model), None, explicit_name="/models/x")
    with pytest.raises(ModelNameError, match="no such directory"):
        name_model(str(tmp_path / "absent"), None)


def test_a_rank_serves_its_own_part_of_a_shared_aot_cache_and_the_shared_kernels(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from modelexpress.artifacts import collect
    from modelexpress.vllm_plugin.artifacts import other_ranks

    tree = tmp_path / "torch_compile_cache" / "torch_aot_compile" / "h"
    for part in ("rank_0_0", "rank_1_0", "rank_10_0", "inductor_cache/ab"):
        (tree / part).mkdir(parents=True)
        (tree / part / "model").write_bytes(part.encode())
    skip = other_ranks(SimpleNamespace(parallel_config=SimpleNamespace(rank=1, data_parallel_index=0)))
    served = {f.path for f in collect({}, [("vllm", tmp_path, "torch_compile_cache")], skip=skip).files}
    assert served == {
        "torch_compile_cache/torch_aot_compile/h/rank_1_0/model",
        "torch_compile_cache/torch_aot_compile/h/inductor_cache/ab/model",
    }
