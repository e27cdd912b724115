"""Light commands import only what they run: the start-up budget is spent on the verb, not on hub
clients, torch, NIXL or the Kubernetes client (timed in bench/cli_startup.py, asserted here by what
is imported, which does not depend on how busy the machine is)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("huggingface_hub", "torch", "nixl", "kubernetes", "obstore", "safetensors")
PROBE = """
import json, sys
from modelexpress.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["--help"],
        ["config", "generate"],
        ["--endpoint", "127.0.0.1:9", "--timeout", "0.2", "health"],
        ["--format", "json", "cache", "ls", "--cache-directory", "{tmp}"],
        ["model", "--help"],
        ["worker", "pull", "--help"],
    ],
    ids=["version", "help", "config", "health", "cache-ls", "model-help", "worker-help"],
)
def test_light_commands_import_no_heavy_client(argv: list[str], tmp_path: object) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MX_REGISTRY_PATH": f"{tmp_path}/sources.db"},
    )  # fmt: skip
    loaded = set(json.loads(run.stdout.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), (loaded & set(HEAVY), run.stderr[-2000:])


def test_help_lists_every_command_and_each_command_still_parses_in_full() -> None:
    from modelexpress.cli.commands import COMMANDS
    from modelexpress.cli.main import build_parser

    listed = subprocess.run(
        [sys.executable, "-m", "modelexpress", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert all(name in listed for name in COMMANDS)
    full = build_parser()  # every module registered: what the docs generator and tests read
    for name in COMMANDS:
        (leaf,) = [a for a in build_parser([name])._actions if a.dest == "command"]
        assert leaf.choices[name]._actions[1:], f"{name} was registered as a placeholder only"
    assert set(COMMANDS) <= set(next(a for a in full._actions if a.dest == "command").choices)
