"""Fail `make setup` when the installed torch is a CUDA build (it would have pulled GBs of CUDA packages)."""

import sys
from importlib.metadata import distributions

import torch

cuda_packages = sorted(
    d.metadata["Name"] for d in distributions() if (d.metadata["Name"] or "").lower().startswith("nvidia-")
)
try:
    cuda = torch.version.cuda
except AttributeError:
    cuda = None
if cuda or cuda_packages:
    print(f"torch {torch.__version__} is a CUDA build ({cuda}); CUDA packages: {cuda_packages}", file=sys.stderr)
    print("reinstall the CPU build: pip install torch==2.13.0 (CPU wheel or CPU index)", file=sys.stderr)
    sys.exit(1)
print(f"torch {torch.__version__} (CPU build)")
