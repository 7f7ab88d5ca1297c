"""What the CLI and API ask of a running daemon over the control socket (client: mount/control.py).

Each action returns ``(result, entries)``: the JSON-able result for the caller, and the
(directory inode, name) kernel entries that changed and must be invalidated before the caller is
answered. Heavy or writing work runs in a worker thread with the Repo call (and so its LMDB
transaction) inside that thread; staging changes of an artifact are serialized with its commit
and reset by the artifact's lock. What renumbers staging (commit, reset, deleting or putting
latest) keeps the inode numbers of staging's nodes (mount/moves.py), so ``staging`` itself is never
invalidated: only the entries of nodes that are gone or whose attributes changed.
"""

from __future__ import annotations

import functools
import json

import trio

from ..repo import retention
from ..staging.commit import commit
from ..errors import NotFound
from .inodes import ROOT_INODE
from .model import Filesystem
from .nodes import ArtifactState

Entries = list[tuple[int, bytes]]


def _thread(fn, *args, **kwargs):
    return trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class Actions:
    def __init__(self, fs: Filesystem):
        self.fs, self.repo = fs, fs.repo

    def _changed(self, art: ArtifactState) -> Entries:
        """The changed names (versions, aliases) of an artifact's directory."""
        return [(art.ino, name) for name in art.refresh()]

    async def commit(self, name: str, aliases=(), message: str = "", metadata=None, type=None,
                     producer=None, ttl=None, force: bool = False):
        """PRODUCER is the caller's (repo/lineage.py): the version records who asked, not us."""
        art = self.fs.artifact(name)
        staging = self.fs.staging_of(art)
        async with art.lock:
            staging.check_no_writers("commit")
            await self.fs.marks.flush(staging)
            run = functools.partial(commit, self.repo, name, aliases=list(aliases), message=message,
                                    metadata=metadata, type=type, producer=producer, ttl=ttl,
                                    force=force, precommit=self.fs.marks.precommit)
            (info, created), stale = await staging.follow(run)
        result = {"version": info.label if info else None, "created": created}
        return result, self._changed(art) + stale

    async def reset(self, name: str):
        art = self.fs.artifact(name)
        staging = self.fs.staging_of(art)
        async with art.lock:
            staging.check_no_writers("reset")
            _, stale = await staging.follow(staging.model.reset)
        return None, self._changed(art) + stale

    async def status(self, name: str):
        return await _thread(self.fs.staging_of(self.fs.artifact(name)).model.status), []

    async def alias(self, name: str, ref: str, alias: str, force: bool = False, protect=None):
        art = self.fs.artifact(name)
        v = await _thread(self.repo.alias, name, ref, alias, force=force, protect=protect)
        return {"version": v.label}, self._changed(art)

    async def unalias(self, name: str, alias: str, force: bool = False):
        art = self.fs.artifact(name)
        await _thread(self.repo.unalias, name, alias, force=force)
        return None, self._changed(art)

    async def version(self, name: str, ref: str):
        """NAME:REF's record, for a client that cannot read the store (api/store.py)."""
        v = self.repo.resolve(name, ref)
        return {"number": v.number, "record": json.loads(v.record()), "aliases": v.aliases}, []

    async def access(self, name: str, mode: int | None = None, uid: int | None = None,
                     gid: int | None = None):
        """chmod / chown NAME (catalog/access.py); the kernel drops MOUNT/NAME's cached attributes
        and those of NAME/staging/ (which shows them) before the caller is answered, so its new
        mode is enforced from then on."""
        art = self.fs.artifact(name)
        new = await _thread(self.repo.set_access, name, mode=mode, uid=uid, gid=gid)
        return new.fields(), [(art.ino, None), (self.fs.staging_of(art).root().ino, None)]

    async def gc(self, name: str | None = None):
        """Apply retention (repo/retention.py); open files of deleted versions stay readable."""
        report = await _thread(self._delete, retention.gc, self.repo, name)
        entries = []
        for a in report["artifacts"]:
            entries += self._changed(self.fs.artifact(a["name"]))
        return report, entries

    async def delete_version(self, name: str, ref: str, force: bool = False, reason: str | None = None):
        art = self.fs.artifact(name)
        run = functools.partial(self._delete, self.repo.delete_version, name, ref, force=force, reason=reason)
        if art.staging is None:
            v, stale = await _thread(run), []
        else:   # deleting latest moves what a staging without changes shows
            async with art.lock:
                v, stale = await art.staging.follow(run)
        return {"version": v.label}, self._changed(art) + stale

    def _delete(self, delete, *args, **kwargs):
        """A Repo.delete_* call (worker thread) whose pins are decided under the open files' lock,
        so no open slips between its decisions and its commit (mount/files.py)."""
        with self.fs.files.deciding() as pinned:
            return delete(*args, pinned=pinned, **kwargs)

    async def delete_artifact(self, name: str):
        art = self.fs.artifact(name)
        staging = self.fs.staging_of(art)
        async with art.lock:
            staging.check_no_writers("delete")
            count = await _thread(self._delete, self.repo.delete_artifact, name)
            art.deleted = True
            self.fs.marks.forget(staging)        # its files stored ahead are given back
        return {"versions": count}, [(ROOT_INODE, name.encode())]

    async def compact(self):
        """Give the store's free pages back to the filesystem (catalog/db.py Database.compact);
        reads go on meanwhile, writes wait."""
        before, after = await _thread(self.repo.compact)
        return {"before_bytes": before, "after_bytes": after}, []

    async def changed(self, name: str):
        """Another process changed NAME (``put``): show it, and drop what the kernel has cached."""
        before = self.fs.artifacts.get(name)
        try:
            art = self.fs.artifact(name)
        except NotFound:
            if before is None:
                return None, []
            before.deleted = True
            return None, [(ROOT_INODE, name.encode())]
        if before is not None and before is not art:
            return None, [(ROOT_INODE, name.encode())]
        stale = await art.staging.rebased() if art.staging is not None else []
        return None, self._changed(art) + stale
