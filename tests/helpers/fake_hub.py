"""A local HTTP server that speaks the part of the Hugging Face Hub API that downloads use.

`GET /api/models/{repo}[/revision/{rev}]` (model info with siblings, sizes and LFS sha256 when
`?blobs=true`), `HEAD|GET /{repo}/resolve/{rev}/{path}` with the hub's headers (X-Repo-Commit,
ETag / X-Linked-Etag, X-Linked-Size) and byte ranges. Errors carry the hub's `X-Error-Code`
(RepoNotFound, RevisionNotFound, EntryNotFound); a repo with a token answers 401 without it.

Fault injection for tests: `cut_after[path] = n` ends the body of that file after n bytes once
(an interrupted download); `corrupt.add(path)` serves flipped bytes with the right length;
`seconds_per_mib = x` paces every body (a slow link, so progress can be watched).
Run standalone (`python -m tests.helpers.fake_hub --port 0 --repo org/name=DIR`) for Jobs and demos.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = ""
    token: str | None = None
    lfs_min: int = 1024  # files at least this big are LFS (sha256 etag), like the hub's large files

    def __post_init__(self) -> None:
        if not self.commit:
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + hashlib.sha1(self.files[name]).digest())
            self.commit = digest.hexdigest()

    def etag(self, name: str) -> str:
        data = self.files[name]
        if len(data) >= self.lfs_min:
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    seconds_per_mib: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.server.state.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(401, "RepoNotFound", "Invalid credentials in Authorization header")
            return None
        return repo

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        with self.server.state.lock:
            ranged = self.headers.get("Range")
            self.server.state.requests.append(f"{self.command} {path}" + (f" {ranged}" if ranged else ""))
        if m := re.match(r"^/api/models/(.+?)(?:/revision/([^/]+))?$", path):
            self._info(m.group(1), m.group(2) or "main", "blobs=true" in (url.query or ""))
        elif m := re.match(r"^/(.+?)/resolve/([^/]+)/(.+)$", path):
            self._file(m.group(1), m.group(2), m.group(3))
        else:
            self._error(404, "EntryNotFound", f"no route for {path}")

    def _resolve(self, repo: Repo, revision: str) -> bool:
        if revision in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return False

    def _info(self, repo_id: str, revision: str, blobs: bool) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._resolve(repo, revision):
            return
        siblings = []
        for name, data in sorted(repo.files.items()):
            sibling: dict[str, object] = {"rfilename": name}
            if blobs:
                sibling["size"] = len(data)
                sibling["blobId"] = hashlib.sha1(data).hexdigest()
                if len(data) >= repo.lfs_min:
                    sibling["lfs"] = {"size": len(data), "sha256": repo.etag(name), "pointerSize": 134}
            siblings.append(sibling)
        body = json.dumps(
            {
                "_id": repo_id,
                "id": repo_id,
                "modelId": repo_id,
                "sha": repo.commit,
                "private": bool(repo.token),
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": siblings,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file(self, repo_id: str, revision: str, name: str) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._resolve(repo, revision):
            return
        data = repo.files.get(name)
        if data is None:
            self._error(404, "EntryNotFound", f"{name} does not exist at {revision}")
            return
        state = self.server.state
        if name in state.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        start, end = 0, len(data)
        ranged = self.headers.get("Range")
        if ranged and (m := re.match(r"bytes=(\d+)-(\d*)", ranged)):
            start = int(m.group(1))
            end = int(m.group(2)) + 1 if m.group(2) else len(data)
        self.send_response(206 if ranged else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{repo.etag(name)}"')
        if len(data) >= repo.lfs_min:
            self.send_header("X-Linked-Etag", f'"{repo.etag(name)}"')
            self.send_header("X-Linked-Size", str(len(data)))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        with state.lock:
            cut = state.cut_after.pop(name, None) if self.command == "GET" else None
        if cut is not None:
            self.wfile.write(data[start : min(end, start + cut)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the connection drops mid-body
            return
        view = memoryview(data)[start:end]
        for offset in range(0, len(view), 1 << 20):
            self.wfile.write(view[offset : offset + (1 << 20)])
            if state.seconds_per_mib:
                self.wfile.flush()
                time.sleep(state.seconds_per_mib)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: HubState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class FakeHub:
    """The server, running in a thread; `endpoint` goes into HF_ENDPOINT."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = HubState()
        self._server = _Server((host, port), self.state)
        self.endpoint = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    def add(self, repo_id: str, files: dict[str, bytes], token: str | None = None) -> Repo:
        repo = Repo(files, token=token)
        self.state.repos[repo_id] = repo
        return repo

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repo", action="append", default=[], help="org/name=DIRECTORY (every file in it)")
    args = parser.parse_args()
    hub = FakeHub(args.host, args.port)
    for spec in args.repo:
        repo_id, _, directory = spec.partition("=")
        root = Path(directory)
        hub.add(repo_id, {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    print(hub.endpoint, flush=True)
    hub._server.serve_forever()


if __name__ == "__main__":
    main()
