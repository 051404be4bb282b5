"""Loopback ports: pick a free one, probe one, wait for one to open or close."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

__all__ = ["free_port", "port_is_open", "wait_until"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it; a race with other programs remains).

    Example
    -------
    >>> 1024 <= free_port() <= 65535
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, *, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on ``host:port``.

    Example
    -------
    >>> port_is_open("127.0.0.1", free_port())
    False
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Call ``predicate`` until it returns True or ``timeout`` seconds pass; return its last answer.

    Example
    -------
    >>> wait_until(lambda: True, timeout=1.0)
    True
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
