"""`ngc://` downloads against a local HTTP server answering NGC's model-file endpoints, and the key order."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from modelexpress.cache import ngc

ROOT = Path(__file__).resolve().parents[2]
KEY = "nvapi-test-key-value"
FILES = {"config.json": b'{"arch": "llama"}', "model.safetensors": os.urandom(2 << 20)}


class _NgcHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = unquote(urlparse(self.path).path)
        self.seen.append(f"{path} {self.headers.get('Range', '')}".strip())
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._reply(401, b'{"requestStatus": {"statusCode": "UNAUTHORIZED"}}')
            return
        listing = re.fullmatch(r"/v2/models/nvidia/nemo/tiny/versions/1\.0/files", path)
        file = re.fullmatch(r"/v2/models/nvidia/nemo/tiny/versions/1\.0/files/(.+)", path)
        if listing:
            body = {"modelFiles": [{"name": n, "size": len(d)} for n, d in FILES.items()]}
            self._reply(200, json.dumps(body).encode())
        elif file and file.group(1) in FILES:
            data = FILES[file.group(1)]
            start = int(m.group(1)) if (m := re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))) else 0
            self._reply(206 if start else 200, data[start:])
        else:
            self._reply(404, b'{"requestStatus": {"statusCode": "NOT_FOUND"}}')

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def ngc_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NgcHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v2"
    monkeypatch.setenv("NGC_API_URL", url)
    _NgcHandler.seen = []
    yield url
    server.shutdown()
    server.server_close()


def test_api_key_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NGC_API_KEY", raising=False)
    monkeypatch.delenv("NGC_CLI_API_KEY", raising=False)
    assert ngc.api_key(tmp_path) is None
    (tmp_path / ".ngc").mkdir()
    (tmp_path / ".ngc" / "config").write_text("[CURRENT]\napikey = from-config\nformat_type = ascii\n")
    assert ngc.api_key(tmp_path) == "from-config"
    monkeypatch.setenv("NGC_CLI_API_KEY", "from-cli-env")
    assert ngc.api_key(tmp_path) == "from-cli-env"
    monkeypatch.setenv("NGC_API_KEY", "from-env")
    assert ngc.api_key(tmp_path) == "from-env"


def test_cli_pulls_an_ngc_model_resuming_a_partial_file(tmp_path: Path, ngc_api: str) -> None:
    target = tmp_path / "cache" / "nvidia" / "nemo" / "tiny" / "1.0"
    target.mkdir(parents=True)
    (target / "model.safetensors.incomplete").write_bytes(FILES["model.safetensors"][: 1 << 20])
    env = {**os.environ, "NGC_API_KEY": KEY, "MODEL_EXPRESS_CACHE_DIRECTORY": str(tmp_path / "cache"),
           "MODEL_EXPRESS_DATABASE_PATH": str(tmp_path / "models.db"), "PYTHONPATH": str(ROOT)}  # fmt: skip
    cli = [
        sys.executable,
        "-m",
        "modelexpress.cli.main",
        "cache",
        "pull",
        "ngc://nvidia/nemo/tiny:1.0",
        "--format",
        "json",
    ]
    run = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    row = json.loads(run.stdout)
    assert (row["provider"], row["revision"], row["path"]) == ("ngc", "1.0", str(target))
    for name, data in FILES.items():
        assert (target / name).read_bytes() == data
    assert f"/v2/models/nvidia/nemo/tiny/versions/1.0/files/model.safetensors bytes={1 << 20}-" in _NgcHandler.seen
    assert KEY not in run.stdout + run.stderr
    refused = subprocess.run(
        cli, env={**env, "NGC_API_KEY": "wrong"}, capture_output=True, text=True, timeout=120, check=False
    )
    assert refused.returncode == 4 and "check the credentials" in refused.stderr
    missing = subprocess.run(
        [*cli[:-3], "ngc://nvidia/nemo/absent:1.0"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert missing.returncode == 3 and "check the model name and revision" in missing.stderr
