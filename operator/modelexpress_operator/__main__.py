"""`python -m modelexpress_operator`: run the operator with the deployment's defaults.

A random peering priority per replica (kopf's advice for several replicas: only the highest-priority
live one is active), the liveness/readiness endpoint on `--health-port`, metrics on `--metrics-port`.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys

import kopf

from modelexpress_operator.settings import OperatorSettingsError, load_operator_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelexpress_operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--peering", help="KopfPeering/ClusterKopfPeering name shared by the replicas")
    peering.add_argument("--standalone", action="store_true", help="a single replica: no peering")
    parser.add_argument("--priority", type=int, help="peering priority (default: random 0..32767)")
    parser.add_argument("--health-port", type=int, default=8081, help="liveness/readiness endpoint /healthz (0: off)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus /metrics (default $MX_OPERATOR_METRICS_PORT)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)

    if args.metrics_port is not None:
        os.environ["MX_OPERATOR_METRICS_PORT"] = str(args.metrics_port)
    try:  # before kopf: its startup handlers would retry a bad setting every minute, with a traceback
        load_operator_settings()
    except OperatorSettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.namespace and args.peering:
        os.environ.setdefault("MX_OPERATOR_PEERING_NAMESPACE", args.namespace[0])
    import modelexpress_operator.handlers  # noqa: F401 - registers the handlers

    kopf.configure(verbose=args.verbose)
    # kopf names this replica among its peers after POD_ID (the chart sets the pod's name); without it,
    # kopf asks the password database for the user, which has no entry for the arbitrary non-root uid an
    # image may run as, and the operator would die at start.
    os.environ.setdefault("POD_ID", f"{socket.gethostname()}/{os.getpid()}")
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=True if args.standalone else None,
        peering_name=args.peering,
        priority=args.priority if args.priority is not None else random.randint(0, 32767),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )


if __name__ == "__main__":
    main()
