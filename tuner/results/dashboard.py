"""`tuner dashboard`: optuna-dashboard on the study storage, with the artifact store attached.

Before serving, every tuner study gets its notes written or refreshed (see
:mod:`tuner.search.notes`), so studies searched before notes existed read the same as new ones.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import socketserver
import threading
from types import FrameType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import optuna_dashboard

from tuner.errors import TunerError
from tuner.search import notes
from tuner.search import study as study_mod
from tuner.search.storage import ArtifactStore


def is_loopback(host: str) -> bool:
    """True when only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def exposure_warning(host: str, port: int) -> str | None:
    """One line when the dashboard is reachable from other machines, which it cannot guard."""
    if is_loopback(host):
        return None
    return (
        f"warning: the dashboard on {host}:{port} has no authentication: anyone who can reach "
        "this port can read and change the studies. Prefer --host 127.0.0.1 and ssh -L."
    )


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """optuna-dashboard's WSGI app, one thread per request (the page loads many at once)."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log: the terminal shows the address and the stop."""


def bind(host: str, port: int) -> WSGIServer:
    """Listen on (host, port) now, so a taken port is refused before any other work."""
    _Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return make_server(
            host, port, _not_ready, server_class=_Server, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise TunerError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
            "pick a free port with --port, or a local address with --host."
        ) from None


def _not_ready(environ: dict, start_response):  # replaced by the dashboard before serving
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


def backfill_notes(storage: optuna.storages.BaseStorage) -> tuple[int, int]:
    """Write missing or stale notes of every tuner study; returns (studies, notes written)."""
    names = study_mod.study_names(storage)
    if not names:
        raise TunerError("this storage has no study yet. Run `tuner search` first.")
    studies = written = 0
    for name in names:
        try:
            pinned = study_mod.load_pinned(storage, name)
        except TunerError:
            continue  # not made by tuner: shown as it is
        studies += 1
        written += notes.backfill(pinned)
    return studies, written


def serve(server: WSGIServer, storage: optuna.storages.BaseStorage, store: ArtifactStore) -> None:
    """Serve optuna-dashboard until Ctrl-C or SIGTERM, then close the socket.

    The signals ask the server loop to finish from another thread rather than raising
    inside a request, where the WSGI handler would swallow the interrupt.
    """
    server.set_app(optuna_dashboard.wsgi(storage, artifact_store=store))

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
