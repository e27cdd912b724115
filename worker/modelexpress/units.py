"""Sizes and rates for people: one unit family everywhere (binary sizes, decimal rates), never "0.00 GiB"."""


def size(nbytes: float) -> str:
    """`512 B`, `2.0 MiB`, `1.13 GiB`: the largest unit that keeps the number at least 1."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.2f} {unit}" if unit == "GiB" else f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def rate(bytes_per_second: float) -> str:
    """`5.9 GB/s`, `266 MB/s`: decimal, as link speeds are quoted."""
    if bytes_per_second >= 1e9:
        return f"{bytes_per_second / 1e9:.1f} GB/s"
    return f"{bytes_per_second / 1e6:.0f} MB/s"
