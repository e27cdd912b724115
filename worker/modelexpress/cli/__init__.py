"""The `modelexpress` command line: one module per verb group, assembled in `main`.

gRPC's core logs its own lines to stderr beside ours (e.g. a failed bind, which the command reports as
one `error:` line): off for the command line unless GRPC_VERBOSITY is set (ERROR shows them again).
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
