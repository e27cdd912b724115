"""A trainer in its own process that publishes one weight version and waits, for the tests that kill it.

python -m tests.helpers.rl_trainer_proc --model-dir DIR --model-name NAME --version N --ready-file F

Reads the checkpoint in DIR, perturbs every tensor (so that version N differs from the checkpoint),
publishes it as version N of NAME with `modelexpress.refit.WeightPublisher` (the `MX_*` environment
decides the registry and the address), writes its WorkerService endpoint to F, and waits until killed.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from safetensors.torch import load_file

from modelexpress.config.worker import load_worker_settings
from modelexpress.files import write_text_atomic
from modelexpress.refit import WeightPublisher
from modelexpress.registry import open_registry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    tensors = load_file(args.model_dir / "model.safetensors")
    for tensor in tensors.values():
        tensor.add_(0.25)
    settings = load_worker_settings()
    publisher = WeightPublisher(args.model_name, settings, open_registry(settings))
    publisher.publish(args.version, sorted(tensors.items()))
    write_text_atomic(args.ready_file, publisher.endpoint or "")
    threading.Event().wait()  # until the test kills this process


if __name__ == "__main__":
    main()
