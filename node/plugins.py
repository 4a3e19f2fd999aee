"""Commands installed beside the node (``paynode bench``, ``paynode sim``).

Each is an entry point in the group ``paynode.commands`` whose object is a
``Command``; the CLI finds them at start and never imports their packages.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

GROUP = "paynode.commands"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]


def installed() -> dict[str, Any]:
    """The installed commands by name."""
    found = {}
    for ep in entry_points(group=GROUP):
        command = ep.load()
        found[command.name] = command
    return found
