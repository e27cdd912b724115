"""Batched `row-sum-64` (p2p/checksum/batched.py) against the per-tensor reference, same run: values equal, and
time per layout on host memory or (`--device cuda`) GPU memory.

For each layout the reference checksums every tensor with its own kernels and `.item()`; the batched
path adds each tensor's bytes as pieces of `--piece-mib` (as READs deliver them) and reads the totals
back once. Prints GB/s of both and batched/reference; exits 1 if any value differs.

`moe` (100,000 tensors; at --mib 1024, 10,736 bytes each, not a 4 KiB multiple, so each has a partial last row) is
left out unless asked for: its reference takes 100k waits for the device.

Usage: python bench/rowsums.py [--device cuda] [--mib 1024] [--reps 3] [--layouts large,small,odd,moe]
"""

from __future__ import annotations

import argparse
import sys

import torch
from timing import best_of

from modelexpress.p2p.checksum import RowSums, row_sum64
from modelexpress.p2p.memory import TensorLayout, TensorSpec, allocate_pool

MIB = 1 << 20


def _layouts(total: int) -> dict[str, list[TensorSpec]]:
    return {
        "large": [TensorSpec(f"l{i}", "bfloat16", (total // 16 // 2,)) for i in range(16)],
        "small": [TensorSpec(f"s{i}", "bfloat16", (total // 4096 // 2,)) for i in range(4096)],
        "odd": [TensorSpec(f"o{i}", "float32", (i * 37 + 5,)) for i in range(2000)],
        "moe": [TensorSpec(f"e{i}", "bfloat16", (max(1, total // 100_000 // 2),)) for i in range(100_000)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--piece-mib", type=int, default=64)
    parser.add_argument("--layouts", default="large,small,odd", help="comma-separated: large, small, odd, moe")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("rowsums: --device cuda needs a GPU; none is visible")
        return 2
    ok = True
    print(f"rowsums: {args.device}, pieces of {args.piece_mib} MiB (GB/s, best of {args.reps})")
    chosen = [name.strip() for name in args.layouts.split(",") if name.strip()]
    for name, specs in _layouts(args.mib * MIB).items():
        if name not in chosen:
            continue
        layout = allocate_pool(specs, args.device)
        for buffer in layout.buffers():
            buffer.random_(0, 256)
        nbytes = layout.total_bytes
        piece = args.piece_mib * MIB

        def reference(layout: TensorLayout = layout) -> dict[str, int]:
            return {n: row_sum64(t) for n, t in layout.tensors.items()}

        def batched(layout: TensorLayout = layout, piece: int = piece) -> dict[str, int]:
            sums = RowSums(layout)
            pieces = [
                (n, start, min(piece, sums.size(n) - start))
                for n in sums.names
                for start in range(0, sums.size(n), piece)
            ]
            for i in range(0, len(pieces), 4096):  # about what one READ of a pooled model delivers
                sums.add_pieces(pieces[i : i + 4096])
            return sums.totals(sums.names)

        ref_s, want = best_of(args.reps, reference)
        bat_s, got = best_of(args.reps, batched)
        same = want == got
        ok &= same
        print(
            f"  {name:5s} ({len(specs):6d} tensors, {nbytes / 2**30:5.2f} GiB): reference {nbytes / ref_s / 1e9:8.2f}  "
            f"batched {nbytes / bat_s / 1e9:8.2f}  | batched/reference {ref_s / bat_s:6.2f}  values {'equal' if same else 'DIFFER'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
