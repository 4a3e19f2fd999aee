#!/usr/bin/env python3
"""Type-check the product packages with mypy: `python tools/typecheck.py [mypy options]`.

The repository keeps the design's folders (domain/, storage/, ...) at its root and installing
maps each into the `paynode` namespace (pyproject.toml, [tool.setuptools.package-dir]). The
editable install does that with an import hook, which mypy does not follow, and mypy has no
setting that renames a folder. So this lays the same mapping out as symlinks
(.mypy_cache/tree/paynode/<name> -> <folder>), runs mypy on the package `paynode` there with
the settings of pyproject.toml's [tool.mypy], and prints each path as it is in the repository.
Exits with mypy's status: 0 when it found no error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".mypy_cache"
TREE = CACHE / "tree"


def package_dirs() -> dict[str, str]:
    """{'domain': 'domain', ...}: each `paynode.X` top-level package and its folder."""
    with open(REPO / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    out = {}
    for name, folder in mapping.items():
        top, _, sub = name.partition(".")
        if top != "paynode" or not sub or "." in sub:
            raise SystemExit(f"typecheck: unexpected package-dir entry {name!r} = {folder!r}")
        out[sub] = folder
    return out


def lay_tree(dirs: dict[str, str]) -> None:
    root = TREE / "paynode"
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():  # links of packages that are gone
        if entry.is_symlink() and entry.name not in dirs:
            entry.unlink()
    (root / "__init__.py").touch()
    for name, folder in dirs.items():
        link, target = root / name, REPO / folder
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


def main(argv: list[str]) -> int:
    dirs = package_dirs()
    lay_tree(dirs)
    started = time.monotonic()
    # cwd is the tree, so that `paynode` is found there and nowhere else; the settings and the
    # cache are the repository's.
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
           "--cache-dir", str(CACHE), *argv, "-p", "paynode"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=TREE, capture_output=True, text=True, check=False)
    names = "|".join(re.escape(name) for name in dirs)
    to_repo = re.compile(rf"^paynode/({names})/", re.MULTILINE)
    sys.stdout.write(to_repo.sub(lambda m: dirs[m.group(1)] + "/", proc.stdout))
    sys.stderr.write(proc.stderr)
    print(f"typecheck: mypy took {time.monotonic() - started:.1f} s", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
