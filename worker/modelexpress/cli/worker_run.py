"""What `modelexpress worker serve | pull` run: serve a model's tensors to peers, or pull them from peers."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from modelexpress.config import LoggingSettings
from modelexpress.config.logs import configure_logging
from modelexpress.config.worker import WorkerSettings, load_worker_settings
from modelexpress.errors import UserError
from modelexpress.files import write_text_atomic
from modelexpress.metrics import serve_metrics
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorLayout, TensorSpec, allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import PullError, PullOptions, PullResult, pull
from modelexpress.p2p.safetensors_dir import SafetensorsError, disk_fallback, load_into, scan
from modelexpress.p2p.source import SourceWorker
from modelexpress.registry import RegistryUnavailableError, open_registry
from modelexpress.registry.base import placement
from modelexpress.units import rate, size

log = logging.getLogger("modelexpress.worker")


_FLAGS = {"model_name": "--model-name", "revision": "--revision", "dtype": "--dtype",
          "tensor_parallel_size": "--tp", "pipeline_parallel_size": "--pp", "rank": "--rank"}  # fmt: skip


def log_level(args: argparse.Namespace) -> str:
    """--log-level when given, else warn with -q, debug with -v, info."""
    if getattr(args, "log_level", None):
        return str(args.log_level)
    if getattr(args, "quiet", False):
        return "warn"
    return "debug" if getattr(args, "verbose", 0) else "info"


def say(args: argparse.Namespace, line: str) -> None:
    """An informational line on standard output; -q leaves only errors (and the JSON asked for)."""
    if not getattr(args, "quiet", False):
        # One write with its newline: processes sharing a stream (the demo's workers) never splice lines.
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _identity(args: argparse.Namespace) -> WorkerIdentity:
    """The worker's identity from its flags; a bad value is one line naming the flag (UserError)."""
    try:
        identity = WorkerIdentity(
            model_name=args.model_name,
            revision=args.revision,
            dtype=args.dtype,
            tensor_parallel_size=args.tp,
            pipeline_parallel_size=args.pp,
            rank=args.rank,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = _FLAGS.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else "a flag"
        raise UserError(f"{flag} {first.get('input')!r}: {first['msg']}") from None
    ranks = identity.tensor_parallel_size * identity.pipeline_parallel_size
    if identity.rank >= ranks:  # a rank no layout has: it would match no source and quietly load from disk
        raise UserError(f"--rank {identity.rank} is outside --tp {identity.tensor_parallel_size} x --pp "
                        f"{identity.pipeline_parallel_size} (ranks 0..{ranks - 1})")  # fmt: skip
    return identity


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def _run_source(
    args: argparse.Namespace,
    identity: WorkerIdentity,
    layout: TensorLayout,
    settings: WorkerSettings,
    engine: NixlEngine,
    ready_file: Path | None,
) -> None:
    registry = open_registry(settings)
    source = SourceWorker(identity, layout, settings, engine)
    try:
        source.start(registry)
    except RegistryUnavailableError:
        source.stop()
        registry.close()
        raise
    assert source.manifest is not None
    say(
        args,
        f"serving {source.manifest.tensor_count} tensors ({size(source.manifest.total_bytes)}) of "
        f"{identity.model_name} rank {identity.rank} at {source.endpoint} (agent {engine.name}); Ctrl-C to stop",
    )
    if ready_file:
        write_text_atomic(ready_file, source.endpoint)
    try:
        _wait_for_signal()
    finally:
        source.stop()
        registry.close()
        server = source.server
        say(args, f"stopped; peers reported {source.served_pulls} pull(s), {size(source.served_bytes)}; at most "
              f"{server.peak_pullers} target(s) at once, {server.refused_pullers} turned away as busy")  # fmt: skip


def _registry_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An unreachable registry ends the command with its message (which never holds a password), exit 1."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except RegistryUnavailableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapped


@_registry_errors
def serve(args: argparse.Namespace) -> int:
    configure_logging(LoggingSettings(level=log_level(args), format="compact"))
    settings = load_worker_settings()
    serve_metrics(settings.metrics_port)
    identity = _identity(args)
    device = _device(args.device)
    try:
        stored = scan(args.model_dir)
    except SafetensorsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    layout = allocate_pool([s.spec for s in stored], device)
    started = time.perf_counter()
    nbytes = load_into(layout.tensors, stored)
    log.info("loaded %d tensors (%s) from %s in %.2fs", len(stored), size(nbytes), args.model_dir,
             time.perf_counter() - started)  # fmt: skip
    engine = NixlEngine(progress_thread=settings.nixl_progress_thread)
    engine.register(layout)
    _run_source(args, identity, layout, settings, engine, args.ready_file)
    return 0


class _ProgressBar:
    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done / 2**20:8.1f}/{total / 2**20:.1f} MiB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _endpoint(value: str) -> str:
    """`--source` as `host:port` (port 1-65535), or a one-line error naming the flag."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--source {value!r}: expected host:port with a port from 1 to 65535, e.g. 10.0.0.7:50051")
    return value


def _device(value: str) -> str:
    """`--device` checked against this torch build, so that a CPU build never ends in an assertion."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {value!r}: expected cpu or cuda[:N]") from None
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise UserError(f"--device {value}: this torch ({torch.__version__}) is a CPU build; use --device cpu")
        if not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count():
            raise UserError(f"--device {value}: no such GPU is visible (torch sees {torch.cuda.device_count()})")
    elif device.type != "cpu":
        raise UserError(f"--device {value!r}: expected cpu or cuda[:N]")
    return value


def _layout_from_sources(endpoints: list[str], timeout: float) -> list[TensorSpec]:
    """The tensor layout from the first source that answers; one error naming each source otherwise."""
    from modelexpress.p2p.client import SourceUnavailableError, WorkerClient

    failures = []
    for endpoint in endpoints:
        client = WorkerClient(endpoint, timeout=timeout)
        try:
            manifest = client.manifest()
        except SourceUnavailableError as exc:
            failures.append(f"{endpoint}: {exc}")
            continue
        finally:
            client.close()
        return [TensorSpec(t.name, t.dtype, t.shape, t.is_parameter) for t in manifest.tensors]
    raise PullError(f"no source answered with its tensor layout ({'; '.join(failures)})")


@_registry_errors
def pull_verb(args: argparse.Namespace) -> int:
    configure_logging(LoggingSettings(level=log_level(args), format="compact"))
    identity = _identity(args)
    endpoints = [_endpoint(e) for e in args.source]
    device = _device(args.device)
    settings = load_worker_settings()
    serve_metrics(settings.metrics_port)
    expected_pods: dict[str, str] = {}
    discover = None
    if not endpoints:

        def discover() -> list[str]:
            registry = open_registry(settings)
            try:
                records = registry.find_ready(identity, placement(settings))
            finally:
                registry.close()
            expected_pods.update({r.endpoint: r.pod_uid for r in records if r.pod_uid})
            return [r.endpoint for r in records]

        endpoints = discover()
    if not endpoints and args.model_dir is None:
        print(
            f"error: no Ready source of {identity.model_name} rank {identity.rank} and no --model-dir to load",
            file=sys.stderr,
        )
        return 3
    specs: list[TensorSpec]
    fallback = None
    try:
        if args.model_dir is not None:
            specs = [s.spec for s in scan(args.model_dir)]
            fallback = disk_fallback(args.model_dir)
        else:
            specs = _layout_from_sources(endpoints, settings.connect_timeout_secs)
    except SafetensorsError as exc:
        print(f"error: --model-dir: {exc}", file=sys.stderr)
        return 2
    except PullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    engine = NixlEngine(progress_thread=settings.nixl_progress_thread)
    layout = allocate_pool(specs, device)
    engine.register(layout)
    options = PullOptions(
        chunk_bytes=settings.chunk_bytes,
        max_inflight=settings.max_inflight,
        transfer_timeout=settings.transfer_timeout_secs,
        connect_timeout=settings.connect_timeout_secs,
        expected_pods=expected_pods,
        verification=settings.verification,
        sample_fraction=settings.verify_sample,
        busy_wait=settings.busy_wait_secs,
        max_sources=settings.max_sources,
    )
    try:
        result = pull(layout, identity, endpoints, engine, options, fallback, _ProgressBar(), discover=discover)
    except PullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        engine.deregister_all()
        return 1
    _print_summary(args, layout, result)
    if args.serve_after:
        _run_source(args, identity, layout, settings, engine, args.ready_file)
    else:
        engine.deregister_all()
    return 0


def _print_summary(args: argparse.Namespace, layout: TensorLayout, result: PullResult) -> None:
    """What a pull did, as one line or (`--format json`) one object; only checked bytes are called verified."""
    from_disk = len(result.fell_back)
    pulled = len(layout.placements) - from_disk
    if args.output_format != "human":
        summary = {
            "tensors": len(layout.placements),
            "bytes": layout.total_bytes,
            "seconds": round(result.seconds, 6),
            "pulled_tensors": pulled,
            "pulled_bytes": result.bytes,
            "sources": result.sources,
            "failed_sources": result.failed_sources,
            "tensors_from_disk": from_disk,
            "verified_tensors": pulled - result.unchecked_tensors,
            "verification": result.verification,
            "verified_bytes": result.verified_bytes,
            "phases": {phase: round(seconds, 6) for phase, seconds in result.phases.seconds.items()},
        }
        print(json.dumps(summary, indent=2 if args.output_format == "json-pretty" else None), flush=True)
        return
    took = f"in {result.seconds:.2f} s ({rate(result.gbps * 1e9)})"
    if result.verified_bytes >= result.bytes:
        checked = "all checksums verified"
    elif result.verified_bytes:
        checked = f"checksums of {size(result.verified_bytes)} verified (verification {result.verification})"
    else:
        checked = "nothing verified (verification off)"
    if not from_disk:
        line = f"pulled {pulled} tensors ({size(result.bytes)}) {took} from {len(result.sources)} source(s); {checked}"
    elif pulled:
        line = (f"pulled {pulled} of {len(layout.placements)} tensors ({size(result.bytes)}) {took} from "
                f"{len(result.sources)} source(s), {checked}; {from_disk} tensor(s) read from --model-dir "
                "(no source delivered them)")  # fmt: skip
    else:
        line = (f"loaded {from_disk} tensors ({size(layout.total_bytes)}) from --model-dir: no source delivered "
                "any, so nothing was checked against a source")  # fmt: skip
    say(args, line)
