"""When the server running a hub begins to exit, so that the hub ends its streams first.

A server that exits waits for its open connections before it runs the app's lifespan
shutdown, and an SSE stream stays open until the hub ends it: the lifespan comes too
late, so the hub has to learn of the exit from the server itself. uvicorn sets
``Server.should_exit`` when it begins to exit (SIGTERM, Ctrl-C, or a program that sets
it). A hub watches the servers it is told about (``TaskHub.stop_with(server)``) and,
when told of none, the uvicorn server that runs in the main thread, found through the
SIGTERM handler uvicorn installs there (its bound ``Server.handle_exit``): what
``uvicorn app:app``, ``sse-tasks serve`` and gunicorn's uvicorn workers run. Each hub
watches its own servers; nothing here is process-global (sse-starlette's ``AppStatus``
is not used). ``tests/web/test_pinned_internals.py`` pins what this reads of uvicorn.
"""

from __future__ import annotations

import signal
from typing import Protocol

import anyio

#: Seconds between two looks at the servers (uvicorn's own main loop ticks every 0.1 s).
POLL_INTERVAL = 0.1


class ExitingServer(Protocol):
    """A server that says when it begins to exit, like ``uvicorn.Server``."""

    should_exit: bool


def main_thread_server() -> ExitingServer | None:
    """The uvicorn server running in the main thread, or None: uvicorn installs its bound
    ``handle_exit`` as the SIGTERM handler while it serves there (not in other threads)."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return server if isinstance(getattr(server, "should_exit", None), bool) else None


class ServerExit:
    """The servers one hub runs under; :meth:`wait` returns when any begins to exit."""

    def __init__(self) -> None:
        self.servers: list[ExitingServer] = []

    def watch(self, server: ExitingServer) -> None:
        """Watch ``server`` (instead of looking for a uvicorn server in the main thread).

        A server that has already exited when the hub next runs is forgotten then: a
        hub served again, by another server, is not stopped by the one before."""
        if not isinstance(getattr(server, "should_exit", None), bool):
            raise TypeError(f"{server!r} has no should_exit flag (a uvicorn.Server has one)")
        if server not in self.servers:
            self.servers.append(server)

    def exiting(self) -> bool:
        """True once a watched server (or else the main thread's uvicorn) begins to exit."""
        servers = self.servers
        if not servers:
            found = main_thread_server()
            servers = [found] if found is not None else []
        return any(server.should_exit for server in servers)

    async def wait(self) -> None:
        """Return once :meth:`exiting`; called as the hub starts to run."""
        self.servers = [server for server in self.servers if not server.should_exit]
        while not self.exiting():  # noqa: ASYNC110 - a flag of the server's: nothing to await
            await anyio.sleep(POLL_INTERVAL)
