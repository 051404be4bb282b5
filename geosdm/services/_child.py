"""Entry point of service child processes: ``python -m geosdm.services._child KIND --parent PID ...``.

Kinds: ``http`` (range HTTP server over ``--root``), ``s3`` (moto) and ``exec`` (replace this process with the
command after ``--``, e.g. ``rustac serve``). ``http`` and ``s3`` bind port 0 and write the bound port to
``--port-file``. Every child follows its parent: on Linux the kernel sends it SIGUSR1 when the parent dies
(``PR_SET_PDEATHSIG``, kept across exec); ``http`` and ``s3`` also poll the parent id. Internal, not public API.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__: list[str] = []

log = logging.getLogger("geosdm.services.child")
_STATE: dict[str, object] = {}  # parent pid and the run folder to remove if the parent dies first


def _follow_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, _PARENT_DIED, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable")
    if os.getppid() != parent:  # the parent died before we got here
        sys.exit(0)


#: The signal the kernel sends when the parent dies (``PR_SET_PDEATHSIG``): not SIGTERM, so the handler knows the
#: parent is gone without asking ``getppid()``, which can still name the dying parent when the signal arrives.
_PARENT_DIED = signal.SIGUSR1


def _parent_died(signum: int, frame: object) -> None:
    """Orphaned: remove the run folder (nobody else will) and exit."""
    logging.shutdown()
    owned = _STATE.get("owned_dir")
    if isinstance(owned, Path):
        import shutil

        shutil.rmtree(owned, ignore_errors=True)
    os._exit(0)


def _exit_now(signum: int, frame: object) -> None:
    logging.shutdown()
    owned = _STATE.get("owned_dir")
    if isinstance(owned, Path) and os.getppid() != _STATE.get("parent"):  # orphaned: nobody else will clean up
        import shutil

        shutil.rmtree(owned, ignore_errors=True)
    os._exit(0)


def _write_port(path: Path, port: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)  # atomic: the parent never reads a half-written file


def _wait_while_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)


def _serve_http(args: argparse.Namespace) -> None:
    import functools

    from geosdm.services.http import RangeHandler, RangeServer

    handler = functools.partial(RangeHandler, directory=str(args.root))
    server = RangeServer((args.host, args.port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    _write_port(args.port_file, int(server.server_address[1]))
    _wait_while_parent(args.parent)
    _exit_now(0, None)


def _serve_s3(args: argparse.Namespace) -> None:
    from moto.server import ThreadedMotoServer

    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    _write_port(args.port_file, int(server.get_host_and_port()[1]))
    _wait_while_parent(args.parent)
    _exit_now(0, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m geosdm.services._child")
    parser.add_argument("kind", choices=["http", "s3", "exec"])
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--owned-dir", type=Path, help="run folder to remove if the parent dies first")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, command = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _STATE.update(parent=args.parent, owned_dir=args.owned_dir)
    _follow_parent(args.parent)
    # SIGTERM from the parent (or Ctrl-C in the terminal): the servers hold nothing worth flushing (files are
    # served read-only, moto keeps memory), so exit at once; the kernel closes the listening socket.
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(_PARENT_DIED, _parent_died)
    if args.kind == "exec":
        if not command:
            parser.error("exec needs a command after --")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(command[0], command)
    if args.port_file is None:
        parser.error("--port-file is required for http and s3")
    if args.kind == "http":
        _serve_http(args)
    else:
        _serve_s3(args)


if __name__ == "__main__":
    main()
