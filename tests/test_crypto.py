"""Encryption at rest (artfs init --encrypt): sealed objects, keyed ids, keys and their errors,
on real stores, through the CLI and a real mount."""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import os
import threading

import lmdb
import pytest

from artfs.errors import BadKey, CorruptData
from artfs.repo.facade import Repo
from artfs.crypto.seal import Sealer
from artfs.store.backend import Obj, chunk_maker
from artfs.store.chunker import THREAD_MIN_SIZE, hashed_chunks
from artfs.store.ids import CHUNK, FILE, TREE, object_id, strong_digest
from artfs.store.local import LocalObjectStore
from artfs.store.sealed import SEAL_SPLIT, SealedObjectStore
from tests.helpers import replace_object, run_cli, stored, stored_ids, tree_snapshot, write

PASS = "correct horse battery staple"
SECRET = b"artfs-crypto-test: the plaintext nobody may find on disk 7f3a9c\n" * 3000   # ~190 kB
NAME = "quarterly-secrets-4b1d.csv"


def env(passphrase: str | None = PASS, **more) -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("ARTFS_PASSPHRASE", "ARTFS_KEY_FILE")}
    if passphrase is not None:
        out["ARTFS_PASSPHRASE"] = passphrase
    return {**out, **more}


def cli(store, *args, passphrase: str | None = PASS, check: bool = False, **more):
    return run_cli(store, *args, env=env(passphrase, **more), check=check)


def make_input(d) -> None:
    write(os.path.join(d, NAME), SECRET)
    write(os.path.join(d, "sub", "random.bin"), os.urandom(600_000))   # > 2 x MAX_SIZE: always 3 chunks or more


def store_files(store) -> dict[str, bytes]:
    """Every file of the store's data directories (the LMDB data files, segments), by path."""
    out = {}
    for path in glob.glob(os.path.join(str(store), "data.*", "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[path] = f.read()
    return out


@pytest.fixture
def enc(tmp_path):
    """An encrypted store holding the distinctive input as secret:v0; verified clean at the end."""
    s = tmp_path / "enc"
    assert cli(s, "init", "--encrypt", check=True).stdout.strip() == str(s)
    make_input(tmp_path / "in")
    assert cli(s, "put", "secret", tmp_path / "in", check=True).stdout == "secret:v0\n"
    yield s
    proc = cli(s, "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_round_trip_put_get_and_commit_through_the_mount(enc, tmp_path, mount_factory, monkeypatch):
    monkeypatch.setenv("ARTFS_PASSPHRASE", PASS)   # the daemon (and the fixture's verify) inherit it
    with open(os.path.join(str(enc), "ARTFS-STORE")) as f:
        assert json.load(f)["format"] == 3   # format 2 + sealed objects: older artfs refuses it
    assert os.stat(os.path.join(str(enc), "ARTFS-KEY")).st_mode & 0o777 == 0o600
    cli(enc, "get", "secret", tmp_path / "out", check=True)
    assert tree_snapshot(tmp_path / "out") == tree_snapshot(tmp_path / "in")

    m = mount_factory(store=enc).start()
    with open(m.path("secret", "v0", NAME), "rb") as f:
        assert f.read() == SECRET
    new = os.urandom(200_000)
    write(m.path("secret", "staging", "added.bin"), new)
    assert cli(enc, "commit", "secret", "-m", "through the mount", check=True).stdout == "secret:v1\n"
    with open(m.path("secret", "v1", "added.bin"), "rb") as f:
        assert f.read() == new
    m.stop()
    m.verify()
    cli(enc, "get", "secret:v1", tmp_path / "out1", check=True)
    with open(tmp_path / "out1" / "added.bin", "rb") as f:
        assert f.read() == new


def test_the_data_files_hold_no_plaintext_nor_file_names(enc, tmp_path):
    plain = tmp_path / "plain"
    run_cli(plain, "put", "secret", tmp_path / "in", check=True)
    needles = (SECRET[:64], NAME.encode(), b"random.bin")
    # the same input in an unencrypted store: the scan finds them there
    assert all(any(n in data for data in store_files(plain).values()) for n in needles)
    files = store_files(enc)
    assert files and sum(map(len, files.values())) > len(SECRET)
    for path, data in files.items():
        for n in needles:
            assert n not in data, f"{n!r} in {path}"


def test_ids_are_keyed(enc, tmp_path):
    plain, other = tmp_path / "plain", tmp_path / "other"
    run_cli(plain, "put", "secret", tmp_path / "in", check=True)
    cli(other, "init", "--encrypt", check=True)   # same passphrase, another master key
    cli(other, "put", "secret", tmp_path / "in", check=True)
    digests = {json.loads(cli(s, "ls", "secret", "--json", check=True).stdout)[0]["digest"]
               for s in (enc, plain, other)}
    assert len(digests) == 3
    ids = [stored_ids(s) for s in (enc, plain, other)]
    assert all(len(i) >= 5 for i in ids)   # the tree, two file objects, chunks
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_wrong_or_missing_key_is_one_line_and_writes_nothing(enc, tmp_path):
    before = {p: hashlib.sha256(d).digest() for p, d in store_files(enc).items()}
    write(tmp_path / "more" / "x", b"more bytes")
    for passphrase in ("wrong", None):
        for args in (("put", "secret", tmp_path / "more"), ("ls",), ("get", "secret", tmp_path / "o")):
            proc = cli(enc, *args, passphrase=passphrase)
            assert proc.returncode == BadKey.exit_code, proc.stderr
            assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1
            assert ("wrong passphrase or key for " + str(enc) if passphrase else "ARTFS_PASSPHRASE") in proc.stderr
    assert not os.path.exists(tmp_path / "o")
    assert {p: hashlib.sha256(d).digest() for p, d in store_files(enc).items()} == before
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    proc = cli(enc, "--key-file", key, "ls", passphrase=None)   # wrapped with a passphrase
    assert proc.returncode == BadKey.exit_code and "passphrase" in proc.stderr
    assert len(json.loads(cli(enc, "ls", "secret", "--json", check=True).stdout)) == 1


@pytest.mark.parametrize("how", ["flipped", "moved"])
def test_a_tampered_object_is_corrupt_data_and_verify_reports_it(enc, tmp_path, how, monkeypatch):
    monkeypatch.setenv("ARTFS_PASSPHRASE", PASS)
    with Repo(str(enc)) as repo:
        sub = repo.tree(repo.resolve("secret").root).lookup(b"sub")
        victim, donor = repo.file(repo.tree(sub.ref).lookup(b"random.bin").ref).chunks[:2]
    original = stored(enc, victim)[1]
    if how == "flipped":    # one byte of the ciphertext, the SHA-256 recomputed to match
        forged = bytearray(original)
        forged[len(forged) // 2] ^= 1
    else:                   # another object's ciphertext under this id, header and SHA-256 forged
        forged = original[:17] + stored(enc, donor)[1][17:]
    assert bytes(forged) != original
    replace_object(enc, victim, bytes(forged))
    with Repo(str(enc)) as repo, pytest.raises(CorruptData, match="fails its authentication check"):
        repo.objects.store.get_many([victim])
    proc = cli(enc, "get", "secret", tmp_path / "out")
    assert proc.returncode == CorruptData.exit_code and len(proc.stderr.splitlines()) == 1
    proc = cli(enc, "verify")
    assert proc.returncode == CorruptData.exit_code and "secret:v0 sub/random.bin" in proc.stdout
    replace_object(enc, victim, original)   # clean again for the fixture's verify


def test_change_passphrase_and_key_files(enc, tmp_path):
    proc = cli(enc, "key", "change-passphrase", ARTFS_NEW_PASSPHRASE="new one")
    assert proc.returncode == 0, proc.stderr
    assert cli(enc, "ls", passphrase="new one").returncode == 0
    old = cli(enc, "ls")
    assert old.returncode == BadKey.exit_code and "wrong passphrase or key" in old.stderr
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex() + "\n")   # hex form
    assert cli(enc, "key", "change-passphrase", "--new-key-file", key, passphrase="new one").returncode == 0
    assert cli(enc, "ls", passphrase="new one").returncode == BadKey.exit_code
    cli(enc, "--key-file", key, "get", "secret", tmp_path / "out", passphrase=None, check=True)
    assert tree_snapshot(tmp_path / "out") == tree_snapshot(tmp_path / "in")
    wrong = tmp_path / "wrong"
    wrong.write_bytes(os.urandom(32))                # raw form
    proc = cli(enc, "ls", passphrase=None, ARTFS_KEY_FILE=str(wrong))
    assert proc.returncode == BadKey.exit_code and "wrong passphrase or key" in proc.stderr
    # back to a passphrase, for the fixture's verify
    assert cli(enc, "--key-file", key, "key", "change-passphrase", passphrase=None,
               ARTFS_NEW_PASSPHRASE=PASS).returncode == 0


def test_a_key_file_store_and_compaction_keep_it_encrypted(tmp_path):
    s, key = tmp_path / "s", tmp_path / "key"
    key.write_bytes(os.urandom(32))
    assert cli(s, "init", "--encrypt", "--key-file", key, passphrase=None).returncode == 0
    assert cli(s, "ls", passphrase=None).returncode == BadKey.exit_code   # no key given
    make_input(tmp_path / "in")
    k = ("--key-file", key)
    cli(s, *k, "put", "secret", tmp_path / "in", passphrase=None, check=True)
    cli(s, *k, "rm", "secret:v0", "--force", passphrase=None, check=True)
    cli(s, *k, "put", "secret", tmp_path / "in", passphrase=None, check=True)
    cli(s, *k, "compact", passphrase=None, check=True)
    with open(os.path.join(str(s), "ARTFS-STORE")) as f:
        assert json.load(f)["format"] == 3   # format 2 + sealed objects: older artfs refuses it
    cli(s, *k, "put", "other", tmp_path / "in", passphrase=None, check=True)
    assert all(SECRET[:64] not in data for data in store_files(s).values())
    cli(s, *k, "get", "other", tmp_path / "out", passphrase=None, check=True)
    assert tree_snapshot(tmp_path / "out") == tree_snapshot(tmp_path / "in")
    assert cli(s, *k, "verify", passphrase=None).returncode == 0


def test_init_encrypt_on_an_existing_plain_store_is_refused(tmp_path):
    s = tmp_path / "s"
    run_cli(s, "init", check=True)
    proc = cli(s, "init", "--encrypt")
    assert proc.returncode == 5 and "not encrypted" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not os.path.exists(os.path.join(str(s), "ARTFS-KEY"))


def _random_bin(repo):
    sub = repo.tree(repo.resolve("secret").root).lookup(b"sub")
    return repo.file(repo.tree(sub.ref).lookup(b"random.bin").ref)


def test_reads_in_memory_take_the_no_thread_path_and_still_authenticate(enc, tmp_path, monkeypatch):
    """Repo.read_nowait (the mount's read on its event loop, without a worker thread) serves an
    encrypted store's chunks read before from memory, byte-exact; a chunk whose sealed bytes were
    forged fails there too (CorruptData, never other bytes)."""
    monkeypatch.setenv("ARTFS_PASSPHRASE", PASS)
    with Repo(str(enc)) as repo:
        fobj = _random_bin(repo)
        assert len(fobj.chunks) > 1
        data = repo.read(fobj, 0, fobj.size)                        # now read recently: pages in memory
        with open(tmp_path / "in" / "sub" / "random.bin", "rb") as f:
            assert data == f.read()
        repo.objects.store.local._recent.clear()                    # opened again from the store
        got = b"".join(repo.read_nowait(fobj, off, 4096) or b"?" for off in range(0, fobj.size, 4096))
        assert got == data
        victim = fobj.chunks[-1]
    original = stored(enc, victim)[1]
    forged = bytearray(original)
    forged[len(forged) // 2] ^= 1
    replace_object(enc, victim, bytes(forged))
    try:
        with Repo(str(enc)) as repo:
            fobj = _random_bin(repo)
            with pytest.raises(CorruptData):
                repo.read(fobj, 0, fobj.size)
            repo._touched.update(fobj.chunks)
            with pytest.raises(CorruptData, match="fails its authentication check"):
                repo.read_nowait(fobj, fobj.size - 10, 10)
    finally:
        replace_object(enc, victim, original)   # clean again for the fixture's verify


def test_reads_open_sealed_chunks_in_place_in_the_map_once_each(enc, tmp_path, monkeypatch):
    """Reads of an encrypted store (Repo.read, as the first read of a fresh mount does in its
    worker thread; Repo.read_nowait; get_many) open each sealed chunk straight from the LMDB map,
    never copying the sealed bytes out of it first (the local store's copying reads are not
    used), byte-exact; reads that split chunks open each chunk once (kept for the next read); a
    read that takes chunks whole opens each straight into its reply (``open_into``), none into a
    plaintext of its own (``open_new``, as a read that takes a chunk in part)."""
    monkeypatch.setenv("ARTFS_PASSPHRASE", PASS)
    copied, opened, into = [], [], []
    for name in ("get_many", "read_ranges", "read_ranges_resident"):
        real = getattr(LocalObjectStore, name)
        monkeypatch.setattr(LocalObjectStore, name,
                            lambda self, arg, real=real, name=name: copied.append(name) or real(self, arg))
    real_open, real_new, real_into = Sealer.open, Sealer.open_new, Sealer.open_into
    monkeypatch.setattr(Sealer, "open", lambda self, oid, sealed: opened.append(oid) or real_open(self, oid, sealed))
    monkeypatch.setattr(Sealer, "open_new", lambda self, oid, sealed: opened.append(oid)
                        or real_new(self, oid, sealed))
    monkeypatch.setattr(Sealer, "open_into", lambda self, oid, sealed, out: into.append(oid)
                        or real_into(self, oid, sealed, out))
    with open(tmp_path / "in" / "sub" / "random.bin", "rb") as f:
        expect = f.read()
    with Repo(str(enc)) as repo:
        fobj = _random_bin(repo)
        assert len(fobj.chunks) > 2
        opened.clear()
        step = 5000   # not a divisor of any chunk's length: most reads split a chunk
        assert b"".join(repo.read(fobj, off, step) for off in range(0, fobj.size, step)) == expect
        # each chunk opened once; one that a read takes whole (the file's last chunk may be shorter
        # than a step) straight into the reply, the others into a plaintext kept for the next read
        assert sorted(opened + into) == sorted(fobj.chunks)
        assert all(len(data) <= step for data in repo.objects.store.get_many(into))
        repo.objects.store.local._recent.clear()
        assert b"".join(repo.read_nowait(fobj, off, step) or b"?" for off in range(0, fobj.size, step)) == expect
        repo.objects.store.local._recent.clear()
        opened.clear()
        into.clear()
        assert repo.read(fobj, 0, fobj.size) == expect
        assert into == fobj.chunks and opened == []
        into.clear()
        assert repo.read_nowait(fobj, 0, fobj.size) == expect
        assert into == fobj.chunks and opened == []
        assert b"".join(repo.objects.store.get_many(fobj.chunks)) == expect
    assert copied == []


def test_a_read_never_returns_bytes_not_opened_from_the_store(tmp_path):
    """A sealed store's read of chunks taken whole, in part and from those kept: every byte of the
    reply is a verified chunk's (its buffer is not zeroed first: artfs/buffers.py unfilled), so a
    chunk that fails its check or is shorter than the span asked of it (sealed with the store's key
    but not the length its file says) is CorruptData, never a reply with other or missing bytes."""
    master = os.urandom(32)
    store = SealedObjectStore.local(str(tmp_path / "objects"), master)
    pieces = [os.urandom(n) for n in (70_000, 50_000, 90_000)]
    ids = [store.object_id(p) for p in pieces]
    store.put_many([Obj(oid, b"", p) for oid, p in zip(ids, pieces)])
    spans = [(ids[0], 1000, 70_000), (ids[1], 0, 50_000), (ids[2], 0, 40_000)]
    assert store.read_ranges(spans) == pieces[0][1000:] + pieces[1] + pieces[2][:40_000]
    assert store.read_ranges([(ids[2], 40_000, 90_000)]) == pieces[2][40_000:]   # the rest, kept
    store.close()
    short = Sealer(master).seal(ids[1], pieces[1][:30_000])   # authentic, but 20,000 bytes short
    e = lmdb.open(str(tmp_path / "objects"), max_dbs=16)
    with e.begin(write=True, db=e.open_db(b"objects")) as txn:
        txn.put(ids[1], hashlib.sha256(short).digest() + short)
    e.close()
    store = SealedObjectStore.local(str(tmp_path / "objects"), master)
    for span in [(ids[1], 0, 50_000), (ids[1], 10_000, 50_000)]:
        with pytest.raises(CorruptData, match="shorter"):
            store.read_ranges([(ids[0], 0, 70_000), span])
    assert store.read_ranges([(ids[1], 0, 30_000)]) == pieces[1][:30_000]
    store.close()


def test_an_encrypted_remote_indexes_a_reference_file_as_a_file_object(enc, tmp_path, s3, s3_bucket, monkeypatch):
    """A reference file's object (first byte R, of the file kind: store/ids.py) pushed to an
    encrypted remote is indexed there as a file object, as on a plain remote, beside chunks and
    trees: the index's kind is what pull, ``has`` and the lazy store go by (as a chunk, a clone
    would leave it on the remote and fetch it into the chunk cache)."""
    from tests.test_remote import aws_env, url
    write(tmp_path / "refsrc" / "r.txt", b"bytes that stay at their source\n")
    keys = {k: v for k, v in aws_env(s3).items() if k.startswith("AWS_")}
    cli(enc, "put", "refd", "--reference", f"file://{tmp_path / 'refsrc'}", check=True, **keys)
    cli(enc, "remote", "add", "origin", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http", check=True,
        **keys)
    cli(enc, "push", check=True, **keys)
    for k, v in {**keys, "ARTFS_PASSPHRASE": PASS}.items():
        monkeypatch.setenv(k, v)
    with Repo(str(enc)) as repo:
        root = repo.resolve("refd").root
        ref = repo.tree(root).lookup(b"r.txt").ref
        assert repo.db.objects.get_many([ref])[0][:1] == b"R"
        fobj = _random_bin(repo)
        ids = [ref, root, fobj.chunks[0]]
        assert repo.db.objects.remote().kinds(ids) == [FILE, TREE, CHUNK]


def sealed_records(store_dir, ids) -> dict[bytes, bytes]:
    """The LMDB record (digest + stored bytes) of each id in the object environment at STORE_DIR."""
    e = lmdb.open(str(store_dir), max_dbs=16, readonly=True, lock=False)
    try:
        with e.begin(db=e.open_db(b"objects", create=False)) as txn:
            return {oid: bytes(txn.get(oid)) for oid in ids}
    finally:
        e.close()


def cut(tmp_path, data: bytes, make) -> list[tuple]:
    """(object, length) of each chunk of DATA, made by MAKE (store/chunker.py hashed_chunks)."""
    path = tmp_path / "chunked"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(hashed_chunks(fd, len(data), make))
    finally:
        os.close(fd)


def seal_threads(monkeypatch) -> list[str]:
    """The name of the thread of each Sealer.seal call from now on."""
    names = []
    real_seal = Sealer.seal
    monkeypatch.setattr(Sealer, "seal", lambda self, oid, d: names.append(threading.current_thread().name)
                        or real_seal(self, oid, d))
    return names


def test_a_big_batch_is_sealed_in_two_threads_each_chunk_as_alone(tmp_path, monkeypatch):
    """A put_many of plain objects (a pull's batch) of at least SEAL_SPLIT bytes is sealed in two
    threads at once (store/sealed.py _sealed: AES-GCM and SHA-256 run without the GIL), and what is
    stored is exactly what sealing each chunk alone gives: every record the seal of its chunk
    under its id with the SHA-256 of the sealed bytes, in its place; the chunks read back exact."""
    master = os.urandom(32)
    store = SealedObjectStore.local(str(tmp_path / "objects"), master)
    data = os.urandom(SEAL_SPLIT * 3)
    pieces = [obj.data for obj, _ in cut(tmp_path, data, lambda d: Obj(b"", b"", d))]
    objs = [Obj(store.object_id(d), b"", d) for d in pieces]
    threads = seal_threads(monkeypatch)
    store.put_many(objs)
    assert len(objs) > 2 and len(threads) == len(objs)
    assert len(set(threads)) == 2
    assert store.get_many([o.id for o in objs]) == pieces
    store.close()
    records = sealed_records(tmp_path / "objects", [o.id for o in objs])
    for obj in objs:
        blob = Sealer(master).seal(obj.id, obj.data)
        assert records[obj.id] == hashlib.sha256(blob).digest() + blob


def test_an_ingest_seals_in_its_chunking_threads_and_put_many_stores_as_is(tmp_path, monkeypatch):
    """An ingest into an encrypted store makes each chunk's object as the store keeps it in its
    chunking threads (store/backend.py chunk_maker -> SealedObjectStore.seal_chunk: keyed id,
    sealed bytes, their SHA-256; made in artfs-chunk-maker, beside the thread that cuts), so the
    storing thread's put_many only stores: every chunk is sealed once, there, none again in
    put_many; each length is the plaintext's, each record exactly its chunk's seal with that
    seal's SHA-256, and the chunks read back exact. A plain store's objects are made there as
    before (id, SHA-256 of the bytes)."""
    master = os.urandom(32)
    store = SealedObjectStore.local(str(tmp_path / "objects"), master)
    data = os.urandom(THREAD_MIN_SIZE * 2)
    threads = seal_threads(monkeypatch)
    made = cut(tmp_path, data, chunk_maker(store))
    assert len(made) > 2 and len(threads) == len(made)
    assert set(threads) == {"artfs-chunk-maker"}
    threads.clear()
    store.put_many([obj for obj, _ in made])
    assert threads == []
    pieces, pos = [], 0
    for obj, n in made:
        pieces.append(data[pos:pos + n])
        pos += n
    assert pos == len(data)
    ids = [obj.id for obj, _ in made]
    assert ids == [store.object_id(p) for p in pieces]
    assert store.get_many(ids) == pieces
    store.close()
    records = sealed_records(tmp_path / "objects", ids)
    for (obj, _), piece in zip(made, pieces):
        blob = Sealer(master).seal(obj.id, piece)
        assert records[obj.id] == hashlib.sha256(blob).digest() + blob
    plain = LocalObjectStore(str(tmp_path / "plain"))
    assert [tuple(obj) for obj, _ in cut(tmp_path, data, chunk_maker(plain))] == \
        [(object_id(p), strong_digest(p), p) for p in pieces]
    plain.close()


def test_a_chunk_sealed_ahead_under_a_stored_id_with_other_bytes_is_refused(tmp_path):
    """A chunk sealed in the chunking thread (seal_chunk) is still compared with what is stored
    under its id: other bytes under one id (a forced collision of the keyed ids) are CorruptData
    and nothing is written; the same bytes again are deduplicated (nothing new)."""
    store = SealedObjectStore.local(str(tmp_path / "objects"), os.urandom(32))
    store.object_id = lambda data, kind=0: b"\x00" * 16   # every content collides
    assert store.put_many([store.seal_chunk(b"alpha" * 1000)]) > 0
    with pytest.raises(CorruptData, match="collision"):
        store.put_many([store.seal_chunk(b"bravo" * 1000)])
    assert store.get_many([b"\x00" * 16]) == [b"alpha" * 1000]
    assert store.put_many([store.seal_chunk(b"alpha" * 1000)]) == 0
    store.close()


def test_a_put_into_an_encrypted_store_seals_its_chunks_in_the_chunking_threads(tmp_path, monkeypatch):
    """Through ``Repo.put`` (the store wrapped in the lazy store, store/lazy.py), each chunk is
    sealed once, in the chunk-making thread, and put_many stores it as is; the file reads back."""
    monkeypatch.setenv("ARTFS_PASSPHRASE", PASS)
    s = tmp_path / "enc"
    assert cli(s, "init", "--encrypt", check=True).returncode == 0
    data = os.urandom(THREAD_MIN_SIZE * 2)
    write(os.path.join(tmp_path, "big", "data.bin"), data)
    threads = seal_threads(monkeypatch)
    with Repo(str(s)) as repo:
        repo.put("big", str(tmp_path / "big"))
        fobj = repo.file(repo.tree(repo.resolve("big").root).lookup(b"data.bin").ref)
        assert repo.read(fobj, 0, fobj.size) == data
    assert threads.count("artfs-chunk-maker") == len(fobj.chunks)
    assert len(threads) - len(fobj.chunks) <= 3   # the file object and the tree, sealed in put_many


def test_the_per_object_key_is_the_hmac_of_the_id_under_the_seal_key():
    """``Sealer.object_key`` (the seal key's padded blocks hashed once, then two short hashes per
    object) is HMAC-SHA256(seal subkey, id), the key the stored format is sealed under."""
    from artfs.crypto.seal import subkey
    master = os.urandom(32)
    sealer = Sealer(master)
    for oid in (os.urandom(16), bytes(16), b"\xff" * 16):
        assert sealer.object_key(oid) == hmac.digest(subkey(master, b"object seal"), oid, "sha256")


def test_a_read_of_one_chunk_several_times_opens_it_once_and_get_many_gives_bytes(tmp_path, monkeypatch):
    """Spans of one object several times in a read (a file of repeated content), whole and in
    part: each placed right, the object opened once; a chunk kept from a read in part comes out
    of ``get_many`` as bytes, as every other object does."""
    master = os.urandom(32)
    store = SealedObjectStore.local(str(tmp_path / "objects"), master)
    pieces = [os.urandom(n) for n in (60_000, 20_000)]
    ids = [store.object_id(p) for p in pieces]
    store.put_many([Obj(oid, b"", p) for oid, p in zip(ids, pieces)])
    calls = []
    for name in ("open_into", "open_new"):
        real = getattr(Sealer, name)
        monkeypatch.setattr(Sealer, name, lambda self, *a, real=real, name=name: calls.append(name) or real(self, *a))
    a, b = ids
    spans = [(a, 0, 60_000), (b, 5, 20_000), (a, 0, 60_000), (b, 0, 20_000), (a, 7, 100)]
    assert store.read_ranges(spans) == pieces[0] + pieces[1][5:] + pieces[0] + pieces[1] + pieces[0][7:100]
    assert sorted(calls) == ["open_into", "open_new"]
    calls.clear()
    assert store.read_ranges([(b, 1, 2)]) == pieces[1][1:2] and calls == []   # kept
    got = store.get_many([b, a])
    assert got == [pieces[1], pieces[0]] and all(type(x) is bytes for x in got)
    store.close()
