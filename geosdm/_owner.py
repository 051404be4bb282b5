"""Who writes a file: this host's name and whether a process on it still runs (writer locks, partial files)."""

from __future__ import annotations

import os
import re
import socket

__all__ = ["host_name", "process_alive"]


def host_name() -> str:
    """This host's name, reduced to letters and digits (safe in file names)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (one of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
