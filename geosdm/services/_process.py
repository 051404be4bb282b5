"""Service child processes: spawn with a log file, wait until ready, stop (terminate -> kill) and reap.

Every service runs in its own process because GDAL (rasterio) holds the GIL while it opens a remote file, so
a server thread in the reading process would deadlock. Children are started through
``python -m geosdm.services._child``, which ties their life to this process (see that module); live children
are also stopped by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from geosdm.errors import ServiceError
from geosdm.services._ports import port_is_open, wait_until

__all__ = ["ChildProcess", "PortFileService", "child_argv", "log_tail", "run_dir"]

log = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[ChildProcess] = weakref.WeakSet()


def child_argv(kind: str, *args: str) -> list[str]:
    """Command line of a service child of ``kind`` (``http``, ``s3`` or ``exec``) bound to this process."""
    level = logging.getLevelName(logging.getLogger("geosdm.services").getEffectiveLevel())
    head = [sys.executable, "-m", "geosdm.services._child", kind]
    return [*head, "--parent", str(os.getpid()), "--log-level", level, *args]


def log_tail(path: Path, lines: int = 20) -> str:
    """Last ``lines`` lines of a log file (for error messages)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


class ChildProcess:
    """One service child: ``argv`` with stdout and stderr appended to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        """Start the child (no waiting)."""
        log.debug("starting %s: %s", self.name, " ".join(self.argv))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._proc = subprocess.Popen(  # a light `import geosdm` (no xarray accessor): children start fast
                self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env={**os.environ, "GEOSDM_SERVICE_CHILD": "1"},
            )
        except OSError as exc:
            self.stop()
            raise ServiceError(f"cannot start {self.name} ({self.argv[0]}): {exc}; check the installation") from exc
        _LIVE.add(self)

    def wait_ready(self, ready: Callable[[], bool], *, timeout: float, hint: str) -> None:
        """Wait until ``ready()`` holds; raise :class:`ServiceError` with the log tail if the child exits first.

        ``hint`` is the fix appended to the message.
        """
        ok = wait_until(lambda: not self.running or ready(), timeout=timeout)
        if ok and self.running:
            return
        code = None if self._proc is None else self._proc.poll()
        self.stop()
        why = f"exited with code {code}" if ok else f"was not ready within {timeout:g} s"
        tail = log_tail(self.log_path)
        raise ServiceError(f"{self.name} {why}; {hint}. Its log ({self.log_path}) ends with:\n{tail}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the child, kill it after ``timeout`` seconds, reap it and close the log (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) ignored SIGTERM for %g s; killing it", self.name, proc.pid, timeout)
                    proc.kill()
                    proc.wait(timeout)
            log.debug("%s (pid %d) stopped, exit code %s", self.name, proc.pid, proc.returncode)
        if self._log is not None:
            self._log.close()
            self._log = None
        _LIVE.discard(self)

    def __del__(self) -> None:  # last resort: never leave a child behind
        if getattr(self, "_proc", None) is not None:
            self.stop(timeout=1.0)


@atexit.register
def _stop_all() -> None:
    for child in list(_LIVE):
        child.stop(timeout=2.0)


def run_dir(workdir: str | os.PathLike[str] | None, prefix: str) -> tuple[Path, bool]:
    """``(folder, owned)``: ``workdir`` (created if missing) or a new temporary folder that the caller removes."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=prefix)), True
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path, False


class PortFileService:
    """Base of the HTTP and S3 servers: a ``_child`` of ``kind`` that binds a free port and reports it in a file."""

    kind = ""
    label = ""

    def __init__(self, *, host: str, workdir: str | os.PathLike[str] | None, startup_timeout: float) -> None:
        self.host = host
        self.startup_timeout = startup_timeout
        self._workdir = workdir
        self._dir: Path | None = None
        self._owned = False
        self._child: ChildProcess | None = None
        self._port: int | None = None
        self._port_file = Path()

    def _child_args(self) -> list[str]:
        return []

    @property
    def port(self) -> int:
        """Bound TCP port (only while running)."""
        if self._port is None:
            raise ServiceError(f"{self.label} is not running; call start() or use it as a context manager")
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the server child (None when stopped)."""
        return None if self._child is None else self._child.pid

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / f"{self.kind}.log"

    def _read_port(self, path: Path) -> bool:
        try:
            port = int(path.read_text())
        except (OSError, ValueError):
            return False
        if port_is_open(self.host, port):
            self._port = port
            return True
        return False

    def _launch(self) -> None:
        """Spawn the child without waiting (see :meth:`_await`)."""
        if self._child is not None:
            return
        self._dir, self._owned = run_dir(self._workdir, f"geosdm-{self.kind}-")
        self._port_file = self._dir / f"{self.kind}.port"
        self._port_file.unlink(missing_ok=True)
        args = ["--host", self.host, "--port-file", str(self._port_file), *self._child_args()]
        if self._owned:
            args += ["--owned-dir", str(self._dir)]
        argv = child_argv(self.kind, *args)
        self._child = ChildProcess(self.label, argv, log_path=self._dir / f"{self.kind}.log")
        try:
            self._child.spawn()
        except BaseException:
            self.stop()
            raise

    def _await(self) -> None:
        """Wait until the launched child listens; stop it and raise :class:`ServiceError` if it does not."""
        if self._child is None or self._port is not None:
            return
        port_file = self._port_file
        try:
            self._child.wait_ready(
                lambda: self._read_port(port_file),
                timeout=self.startup_timeout,
                hint=f"check that {self.host} is a local address and that geosdm is installed in {sys.executable}",
            )
        except BaseException:
            self.stop()
            raise
        log.info("%s at %s:%d (pid %s)", self.label, self.host, self._port, self._child.pid)

    def _check_can_start(self) -> None:
        """Raise before spawning when the service cannot start (subclasses check their inputs)."""

    def start(self, *, wait: bool = True) -> Self:
        """Start the server child; with ``wait`` (default) return once it listens, else call :meth:`wait_ready`."""
        self._check_can_start()
        self._launch()
        if wait:
            self._await()
        return self

    def wait_ready(self) -> Self:
        """Wait until a server started with ``start(wait=False)`` listens; returns ``self``."""
        self._await()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server child, reap it and free its port (idempotent)."""
        if self._child is not None:
            self._child.stop(timeout)
            log.info("%s stopped", self.label)
        self._child = None
        self._port = None
        if self._dir is not None and self._owned:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
