"""Print the requirements of doclane's core plus the named extras, read from
pyproject.toml, one per line: what an image installs (pinned by the
constraints in requirements.lock) before the source is copied in, so that a
source change does not invalidate the dependency layers.

  python deps.py pyproject.toml embed,parse
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; pyproject.toml has {', '.join(optional)}")
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += optional[extra]
    return reqs


if __name__ == "__main__":
    extras = [e for e in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if e]
    print("\n".join(requirements(sys.argv[1], extras)))
