"""Which staging files this mount has open for writing, kept in the staging index.

If the daemon dies while a file is open for writing, the file may be short (the writer's last
writes never arrived), and nothing in the file itself says so. So the daemon holds a *writer
token* for its life (catalog/sessions.py: a lock file under its flock) and marks each staging
file with it in the transaction that makes the file writable (create, copy-up; staging/overlay.py).
After the last writer of a file closes, the mark is dropped; those drops are batched, at most
one transaction per artifact every FLUSH_SECONDS, since a transaction costs an fsync and ``cp -r``
closes files by the thousand. A mark whose token's lock nobody holds is a file the dead mount had
open: ``status`` lists it and ``commit`` refuses it without --force. Dying within FLUSH_SECONDS
after a close only over-reports (the file is flagged although complete), never under-reports.

The same opens and closes drive the storing of closed files ahead of their commit (staging/
precommit.py, a worker thread started with the first close): a last close queues the file, an open
for writing or the removal of its last name voids what was stored of it, a commit first waits for
the file being stored (``flush``).
"""

from __future__ import annotations

import trio

from ..catalog.sessions import Session
from ..errors import NotFound
from ..staging.precommit import Precommit

FLUSH_SECONDS = 0.1


class WriteMarks:
    def __init__(self, store_path: str):
        self.store_path = store_path
        self._session: Session | None = None
        self._closed: dict[object, set[int]] = {}   # StagingState -> staging inodes to unmark
        self._precommit: Precommit | None = None

    @property
    def precommit(self) -> Precommit | None:
        """The files stored ahead of their commit (None until a file was closed)."""
        return self._precommit

    def token(self) -> bytes:
        """This mount's writer token (its lock is taken on first use)."""
        return self._token_session().token

    def _token_session(self) -> Session:
        if self._session is None:
            self._session = Session(self.store_path)
        return self._session

    def opened(self, staging, sino: int) -> None:
        """A file is open for writing again: its mark must stay, what was stored of it is void."""
        self._closed.get(staging, set()).discard(sino)
        self.removed(staging, sino)

    def removed(self, staging, sino: int) -> None:
        """A file's data file is gone (or about to change): what was stored of it is given back now,
        and a running store of it stops and closes the file (its blocks are freed at once)."""
        if self._precommit is not None:
            self._precommit.invalidate(staging.model.name, sino)

    def closed(self, staging, sino: int) -> None:
        """The last writer of a file closed: drop its mark at the next flush, store its bytes."""
        self._closed.setdefault(staging, set()).add(sino)
        if self._precommit is None:
            self._precommit = Precommit(staging.model.repo, self._token_session())
        self._precommit.closed(staging.model, sino)

    def forget(self, staging) -> None:
        """Staging was renumbered (commit, reset): its marks went with the index records."""
        self._closed.pop(staging, None)
        if self._precommit is not None:
            self._precommit.forget(staging.model.name)

    async def run(self) -> None:
        while True:
            await trio.sleep(FLUSH_SECONDS)
            for staging in list(self._closed):
                async with staging.art.lock:   # no open for writing marks a file meanwhile
                    await self._unmark(staging)

    async def flush(self, staging) -> None:
        """Before a commit (the caller holds the artifact's lock, no file of it is open for
        writing): wait for the file of STAGING being stored ahead, if any, and drop the marks of
        its closed files now, so that being killed during the commit flags no file closed before."""
        if self._precommit is not None:
            await trio.to_thread.run_sync(self._precommit.settle, staging.model.name)
        await self._unmark(staging)

    async def _unmark(self, staging) -> None:
        inos = self._closed.pop(staging, None)
        if inos:
            await trio.to_thread.run_sync(self._drop, staging, inos)

    def close(self) -> None:
        """At exit (no requests run any more): drop the marks of closed files, give up the token.
        Files still open keep their marks, which are now dead: they may be short."""
        if self._precommit is not None:
            self._precommit.stop()
        for staging, inos in self._closed.items():
            self._drop(staging, inos)
        self._closed.clear()
        if self._session is not None:
            self._session.end()

    def _drop(self, staging, inos: set[int]) -> None:
        try:
            staging.model.closed(sorted(inos), self.token())
        except NotFound:   # the artifact was deleted meanwhile
            pass
