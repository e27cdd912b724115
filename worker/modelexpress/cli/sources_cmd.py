"""`modelexpress sources ls`: the source workers a registry knows, from the backend `MX_METADATA_BACKEND` names."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc

from modelexpress.cli.commands import help_for
from modelexpress.config.worker import load_worker_settings
from modelexpress.p2p.records import SourceRecord
from modelexpress.registry import RegistryUnavailableError, open_registry


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sources = subparsers.add_parser("sources", help=help_for("sources"))
    verbs = sources.add_subparsers(dest="sources_verb", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", help="list recorded sources (kubernetes: every ModelMetadata of the namespace)")
    ls.add_argument("--model-name", help="only this model")
    ls.add_argument("--ready", action="store_true", help="only sources in state Ready")
    ls.add_argument("--format", default="human", choices=["human", "json", "json-pretty"])
    ls.add_argument("--probe", action="store_true",
                    help="ask each source's WorkerService whether it answers (2 s each); a record can outlive its worker")  # fmt: skip
    ls.set_defaults(handler=_ls)


def _age(seconds: float) -> str:
    """kubectl's AGE style: 45s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _answers(endpoint: str) -> bool:
    """Whether a WorkerService answers its health check there within 2 seconds."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from modelexpress.channels import worker_channel

    with worker_channel(endpoint) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return True


def _row(record: SourceRecord) -> dict[str, object]:
    identity = record.identity
    return {
        "model": identity.model_name,
        "revision": identity.revision,
        "layout": identity.layout,
        "rank": identity.rank,
        "version": identity.weights_version or None,
        "worker": record.worker_id,
        "state": record.state,
        "endpoint": record.endpoint,
        "node": record.node,
        "podUid": record.pod_uid,
        "tensors": record.tensor_count,
        "bytes": record.total_bytes,
        "activeTransfers": record.active_transfers,
        "updatedAt": datetime.fromtimestamp(record.updated_at, UTC).isoformat(timespec="seconds"),
        "secondsSinceRefresh": round(time.time() - record.updated_at, 1),
    }


def _ls(args: argparse.Namespace) -> int:
    settings = load_worker_settings()
    if settings.metadata_backend == "embedded" and not Path(settings.registry_path).expanduser().exists():
        records: list[SourceRecord] = []  # listing never creates the registry (nor its directory)
    else:
        try:
            registry = open_registry(settings)
            try:
                records = registry.list_sources()
            finally:
                registry.close()
        except ValueError as exc:  # a setting open_registry refuses
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except RegistryUnavailableError as exc:  # unreachable or unusable, at open or while listing
            print(f"error: {exc}", file=sys.stderr)
            return 1
    records = [
        r
        for r in records
        if (args.model_name is None or r.identity.model_name == args.model_name)
        and (not args.ready or r.state == "Ready")
    ]
    rows = [_row(r) for r in sorted(records, key=lambda r: (r.identity.model_name, r.identity.rank, r.worker_id))]
    if args.probe:
        for row in rows:
            row["answers"] = _answers(str(row["endpoint"]))
    if args.format != "human":
        print(json.dumps(rows, indent=2 if args.format == "json-pretty" else None))
        return 0
    if not rows:
        print(f"no sources recorded ({settings.metadata_backend} registry)")
        return 0
    columns = ["model", "layout", "rank", "state", "endpoint", "node", "worker", "activeTransfers"]
    headers = ["MODEL", "LAYOUT", "RANK", "STATE", "ENDPOINT", "NODE", "WORKER", "LOAD", "REFRESHED"]
    cells = [[str(row[c] if row[c] is not None else "-") for c in columns] + [_age(float(str(row["secondsSinceRefresh"])))]
             for row in rows]  # fmt: skip
    if any(row["version"] for row in rows):  # weight versions (RL) only where some source has one
        headers.insert(3, "VERSION")
        for line, row in zip(cells, rows, strict=True):
            line.insert(3, str(row["version"] or "-"))
    if args.probe:
        headers.append("ANSWERS")
        for line, row in zip(cells, rows, strict=True):
            line.append("yes" if row["answers"] else "no")
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    for line in [headers, *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0
