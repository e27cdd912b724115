"""Print the requirements an image installs, one per line, from pyproject.toml: the base dependencies and
the named extras (`python3 hack/image_requirements.py operator`). hack/images.sh fills the wheelhouse
with them and the Dockerfiles install them, so both read the same list. Standard library only: it runs
in the bare base image."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    found = project["optional-dependencies"]
    unknown = [extra for extra in extras if extra not in found]
    if unknown:
        raise SystemExit(f"error: no extra {unknown[0]!r} in {pyproject} (have: {', '.join(sorted(found))})")
    return list(project["dependencies"]) + [req for extra in extras for req in found[extra]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extras", help="comma-separated extras, e.g. operator or worker")
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.extras.split(","))))


if __name__ == "__main__":
    main()
