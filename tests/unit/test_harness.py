"""The harness's own contract: where control-plane binaries come from, and that CI never skips for lack of them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.controlplane import ROOT, ControlPlaneUnavailableError, locate_binaries

pytest_plugins = ["pytester"]

_USES_CONTROL_PLANE = """
def test_needs_cluster(control_plane):
    assert control_plane.server.startswith("https://")
"""


def test_kubebuilder_assets_must_hold_all_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etcd").write_text("")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(ControlPlaneUnavailableError, match="lacks kube-apiserver, kube-controller-manager"):
        locate_binaries()


def test_missing_archive_explains_how_to_get_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("MX_K8S_ARCHIVE", str(tmp_path / "missing.tar.xz"))
    with pytest.raises(ControlPlaneUnavailableError, match=r"setup-envtest use 1\.36"):
        locate_binaries(cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(("ci", "outcome"), [("true", "errors"), ("", "skipped")])
def test_missing_control_plane_fails_under_ci_and_skips_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("MX_K8S_ARCHIVE", str(pytester.path / "missing.tar.xz"))
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_cluster=_USES_CONTROL_PLANE)
    result = pytester.runpytest_subprocess("-p", "tests.harness.fixtures", "-p", "no:cacheprovider", "-rs")
    counts = result.parseoutcomes()
    assert counts.get(outcome) == 1, result.stdout.str()
    if outcome == "errors":
        result.stdout.fnmatch_lines(["*CI=true and no Kubernetes control plane binaries found*"])
    else:
        result.stdout.fnmatch_lines(["*setup-envtest use 1.36*"])
