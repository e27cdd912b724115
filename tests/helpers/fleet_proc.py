"""Many real WorkerService gRPC servers in one process, for operator tests that need dozens of workers.

Each worker is a real `WorkerServer` with a real (one small tensor) manifest and status stream;
only NIXL is left out, since the operator never READs. Driven by JSON lines on stdin, answering one
JSON line per command on stdout:

    {"op": "start", "workers": [{"model": "org/m", "tp": 1, "pp": 1, "rank": 0, "pod": "p", "uid": "u"}]}
        (optional per worker: "engine", "version" (a weights version), "node", "instance", "state", "port")
        -> {"ports": [...]}              (servers on 127.0.0.1, port 0 each; state Ready)
    {"op": "state", "index": 3, "state": "Draining"}  -> {"ok": true}
    {"op": "stop", "index": 3}                         -> {"ok": true}
    {"op": "version", "index": 3, "version": "7"}      -> {"ok": true}  (same port, the next weights version)
    {"op": "ready_times"}  -> {"times": [unix seconds when each worker turned Ready]}
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.service import WorkerInfo, WorkerServer
from tests.helpers.manifests import build_manifest


def start_worker(spec: dict[str, Any]) -> WorkerServer:
    identity = WorkerIdentity(
        model_name=spec.get("model", "test/fleet"),
        tensor_parallel_size=spec.get("tp", 1),
        pipeline_parallel_size=spec.get("pp", 1),
        rank=spec.get("rank", 0),
        engine=spec.get("engine", "vllm"),
        weights_version=spec.get("version", ""),
    )
    layout = allocate_pool([TensorSpec("layer.weight", "float32", (4, 4))])
    info = WorkerInfo(
        agent_name=f"fleet-{spec.get('pod', 'x')}-{identity.rank}",
        pod_name=spec.get("pod", ""),
        pod_uid=spec.get("uid", ""),
        node_name=spec.get("node", ""),
        instance=spec.get("instance", spec.get("pod", "")),
    )
    server = WorkerServer(info, "127.0.0.1", int(spec.get("port", 0)))
    server.start()
    server.publish(build_manifest(identity, layout), b"no-nixl-in-the-fleet")
    server.set_state(spec.get("state", "Ready"))
    return server


def main() -> None:
    servers: list[WorkerServer] = []
    ready_at: list[float] = []
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        reply: dict[str, Any]
        if op == "start":
            started = []
            for spec in command["workers"]:
                server = start_worker(spec)
                servers.append(server)
                ready_at.append(time.time())
                started.append(server.port)
            reply = {"ports": started}
        elif op == "state":
            servers[command["index"]].set_state(command["state"])
            if command["state"] == "Ready":
                ready_at[command["index"]] = time.time()
            reply = {"ok": True}
        elif op == "version":  # an RL replica that installed the next version offers it from the same port
            server = servers[command["index"]]
            assert server.manifest is not None
            identity = server.manifest.identity.model_copy(update={"weights_version": command["version"]})
            server.publish(build_manifest(identity, allocate_pool([TensorSpec("layer.weight", "float32", (4, 4))])),
                           b"no-nixl-in-the-fleet")  # fmt: skip
            server.set_state("Ready")
            reply = {"ok": True}
        elif op == "stop":
            servers[command["index"]].stop(grace=0.5)
            reply = {"ok": True}
        elif op == "ready_times":
            reply = {"times": ready_at}
        else:
            reply = {"error": f"unknown op {op}"}
        print(json.dumps(reply), flush=True)
    for server in servers:
        server.stop(grace=0.2)


if __name__ == "__main__":
    main()
