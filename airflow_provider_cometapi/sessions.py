"""
What the hooks on one event loop share: an aiohttp session and connection lookups.

Thousands of triggers run in one triggerer's event loop. Each holding its own session and
looking its connection up on its own would cost more than the polls, so the hooks on a loop
share one session (a hundred keep-alive connections for all) and one lookup per connection.
Both are keyed by the loop weakly: a loop that is gone is forgotten.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import aiohttp

# Connections one event loop keeps to the gateway, shared by every hook on it.
MAX_CONNECTIONS_PER_LOOP = 100
# A lookup's answer serves the hooks on its loop that ask within this many seconds: triggers
# deferred in a burst then cost one lookup, and a changed connection is read a few seconds later.
LOOKUP_REUSE_SECONDS = 5.0

T = TypeVar("T")


class LoopSession:
    """
    The running loop's aiohttp session, counted by holder: the last holder to let go closes it.

    A holder calls ``acquire()`` when it needs the session and ``release()`` once when done; a
    holder that moved to another loop (``asyncio.run`` twice) is released from the old one. A
    session still held when its loop shuts down (the end of ``asyncio.run``) is closed then, by
    an async generator the loop finalises, so its connections never outlive the loop unclosed.
    """

    def __init__(self) -> None:
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
            weakref.WeakKeyDictionary()
        )
        self._holders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
        self._guards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = (
            weakref.WeakKeyDictionary()
        )

    async def acquire(
        self, held_on: asyncio.AbstractEventLoop | None
    ) -> tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]:
        """
        The running loop's session for a holder that last held one on ``held_on`` (or none).

        Returns the loop the holder now holds a session on, and that session.
        """
        loop = asyncio.get_running_loop()
        if held_on is not loop:
            self.release_elsewhere(held_on)
            self._holders[loop] = self._holders.get(loop, 0) + 1
        session = self._sessions.get(loop)
        if session is None or session.closed:
            # No default headers: the key goes with each request, so one session serves every
            # connection (and key) used on the loop. No cookies: the API needs none, and none set
            # by one answer (a redirect's target, say) may ride along on the next requests.
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS_PER_LOOP), cookie_jar=aiohttp.DummyCookieJar()
            )
            self._sessions[loop] = session
            guard = _closed_at_shutdown(session)
            await guard.__anext__()  # started, so the loop's shutdown_asyncgens() finalises it
            self._guards[loop] = guard
        return loop, session

    async def release(self, held_on: asyncio.AbstractEventLoop | None) -> None:
        """One holder fewer on ``held_on``; the last one closes the session."""
        if held_on is not asyncio.get_running_loop():
            self.release_elsewhere(held_on)
            return
        session = self._drop_holder(held_on)
        guard = self._guards.pop(held_on, None) if session is not None else None
        if guard is not None:
            await guard.aclose()  # closes the session

    def release_elsewhere(self, held_on: asyncio.AbstractEventLoop | None) -> None:
        """``release`` from outside ``held_on`` (a blocking ``close()``, a loop already gone)."""
        session = self._drop_holder(held_on) if held_on is not None else None
        if session is not None:
            _close_without_loop(session)

    def _drop_holder(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession | None:
        holders = self._holders.get(loop, 0) - 1
        if holders > 0:
            self._holders[loop] = holders
            return None
        self._holders.pop(loop, None)
        session = self._sessions.pop(loop, None)
        return session if session is not None and not session.closed else None


async def _closed_at_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


def _close_without_loop(session: aiohttp.ClientSession) -> None:
    """Close a session whose loop is not the running one: its sockets, without awaiting."""
    connector = session.connector
    if connector is not None and not connector.closed:
        # Closes the pooled transports at once; the returned awaitable has nothing left to do.
        connector._close()
    session.detach()


class SharedLookups(Generic[T]):
    """
    Lookups shared by the callers on one loop: one in flight is awaited by all that ask for it,
    and its answer serves those that ask in the next ``LOOKUP_REUSE_SECONDS``. A failed lookup
    is not reused.
    """

    def __init__(self, reuse_seconds: float = LOOKUP_REUSE_SECONDS) -> None:
        self.reuse_seconds = reuse_seconds
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[T]]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, key: Hashable, lookup: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        lookups = self._by_loop.setdefault(loop, {})
        shared = lookups.get(key)
        if shared is None:
            shared = asyncio.ensure_future(lookup())
            lookups[key] = shared
            shared.add_done_callback(lambda done: self._answered(loop, lookups, key, done))
        if shared.done():
            return shared.result()
        # Shielded: one caller being cancelled must not cancel the lookup the others wait for.
        return await asyncio.shield(shared)

    def _answered(
        self,
        loop: asyncio.AbstractEventLoop,
        lookups: dict[Hashable, asyncio.Future[T]],
        key: Hashable,
        done: asyncio.Future[T],
    ) -> None:
        def forget() -> None:
            if lookups.get(key) is done:
                del lookups[key]

        if done.cancelled() or done.exception() is not None:  # seen, so never "not retrieved"
            forget()
        else:
            loop.call_later(self.reuse_seconds, forget)
