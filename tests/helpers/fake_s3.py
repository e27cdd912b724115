"""A local HTTP server answering the S3 calls downloads make: ListObjectsV2, HEAD and GET (with Range).

Path-style addressing (`/bucket/key`), ETags are the MD5 of the content (as S3 gives for single-part
uploads), a missing bucket or key answers S3's XML errors (NoSuchBucket, NoSuchKey). Signatures are
not checked. Fault injection: `cut_after[key] = n` drops the connection after n bytes once;
`corrupt.add(key)` serves flipped bytes under the right ETag.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlparse
from xml.sax.saxutils import escape


@dataclass
class S3State:
    buckets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, resource: str) -> None:
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{code}</Message><Resource>{escape(resource)}</Resource></Error>"
        self._send(status, body.encode(), {"Content-Type": "application/xml"})

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urlparse(self.path)
        state = self.server.state
        with state.lock:
            state.requests.append(
                f"{self.command} {url.path}" + (f" {self.headers['Range']}" if "Range" in self.headers else "")
            )
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        objects = state.buckets.get(bucket)
        if objects is None:
            self._error(404, "NoSuchBucket", bucket)
            return
        if not key:
            self._list(bucket, objects, parse_qs(url.query))
            return
        data = objects.get(key)
        if data is None:
            self._error(404, "NoSuchKey", key)
            return
        start, end = 0, len(data)
        ranged = self.headers.get("Range")
        if ranged and (m := re.match(r"bytes=(\d+)-(\d*)", ranged)):
            start, end = int(m.group(1)), (int(m.group(2)) + 1 if m.group(2) else len(data))
        headers = {
            "ETag": _etag(data),
            "Last-Modified": "Mon, 23 Nov 2026 00:00:00 GMT",
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if ranged:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        self.send_response(206 if ranged else 200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        with state.lock:
            cut = state.cut_after.pop(key, None)
        if key in state.corrupt:  # same length and ETag, other bytes: what a bad disk or proxy serves
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        body = memoryview(data)[start:end]
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        for offset in range(0, len(body), 1 << 20):
            self.wfile.write(body[offset : offset + (1 << 20)])

    def _list(self, bucket: str, objects: dict[str, bytes], query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        keys = sorted(k for k in objects if k.startswith(prefix))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><LastModified>{now}</LastModified><ETag>{escape(_etag(objects[k]))}</ETag>"
            f"<Size>{len(objects[k])}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for k in keys
        )
        body = (
            "<?xml version='1.0' encoding='UTF-8'?>"
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
        )
        self._send(200, body.encode(), {"Content-Type": "application/xml"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: S3State) -> None:
        super().__init__(address, _Handler)
        self.state = state


class FakeS3:
    """The server in a thread; clients take `client_env()` (AWS_ENDPOINT_URL pointing at `endpoint`)."""

    def __init__(self) -> None:
        self.state = S3State()
        self._server = _Server(("127.0.0.1", 0), self.state)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-s3", daemon=True)

    def client_env(self) -> dict[str, str]:
        """What S3 clients (obstore, runai-model-streamer) need to talk to this server: plain HTTP,
        path-style addressing, static credentials, no instance-metadata lookups."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "minio",
            "AWS_SECRET_ACCESS_KEY": "minio-secret-key",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
        }

    def __enter__(self) -> FakeS3:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["FakeS3", "S3State", "quote"]
