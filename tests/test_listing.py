"""Listings of version directories (READDIRPLUS): what they tell the kernel per entry, on the
listing's own fast path (mount/nodes.py VersionDir.listing, mount/ops.py readdir)."""

from __future__ import annotations

import os
import stat

from artfs.mount.model import Filesystem
from artfs.mount.ops import BLKSIZE, DIR_BLKSIZE
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from tests.helpers import write
from tests.test_fs_model import walk

WIDE = 3000   # entries of ~240 bytes each in a READDIRPLUS reply: several requests of DIR_BLKSIZE


def test_with_record_use_a_listed_file_is_one_inode_per_version_as_its_lookup_is(tmp_path):
    """With ``--record-use`` a file's inode identity includes its version (mount/inodes.py): a
    listing, which makes a file's identity inline, gives the same file in v0 and v1 two inodes,
    each the one its lookup answers, with the lookup's attributes."""
    src = tmp_path / "src"
    write(str(src / "same"), b"unchanged")
    with Repo(str(tmp_path / "store")) as repo:
        repo.put("a", str(src))
        write(str(src / "other"), b"new")
        repo.put("a", str(src))
        for record_use in (True, False):
            fs = Filesystem(repo, record_use=record_use)
            listed = {}
            for v in ("v0", "v1"):
                vdir = walk(fs, "a", v)
                dh = fs.opendir(vdir)
                entries = {name: attr for _, name, attr, _ in fs.readdir(dh, 0)}
                fs.releasedir(dh)
                assert entries[b"same"] == fs.lookup(vdir, b"same")
                listed[v] = entries[b"same"].ino
            assert (listed["v0"] != listed["v1"]) == record_use
        assert verify(repo).ok


def test_directories_report_a_smaller_block_size_and_wide_listings_are_whole(mounted, tmp_path):
    """A version directory's st_blksize is DIR_BLKSIZE (glibc sizes its readdir buffer, and so the
    kernel its READDIRPLUS requests, by it), a file's BLKSIZE; a directory whose listing takes
    several such requests lists every entry once, in order, with its own attributes."""
    src = tmp_path / "src"
    names = [f"{i:05d}-" + "n" * 200 for i in range(WIDE)]
    for i, name in enumerate(names):
        write(str(src / "wide" / name), b"x" * (i % 7))
    mounted.cli("put", "a", str(src))
    root = mounted.path("a", "v0")
    wide = os.path.join(root, "wide")
    assert os.stat(wide).st_blksize == DIR_BLKSIZE
    assert os.stat(root).st_blksize == DIR_BLKSIZE
    assert os.stat(os.path.join(wide, names[0])).st_blksize == BLKSIZE
    with os.scandir(wide) as it:
        listed = [(e.name, e.stat(follow_symlinks=False)) for e in it]
    assert sorted(name for name, _ in listed) == names
    for name, st in listed:
        assert stat.S_ISREG(st.st_mode) and st.st_size == int(name[:5]) % 7
