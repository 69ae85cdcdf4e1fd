"""The emulator's records in SQLite, so jobs, schedules and bucket files survive a restart.

Records are JSON documents with a few indexed columns (namespace, stage, labels) for the queries the
API needs. Stored bytes (xorbs, logs, job folders) live in files beside the database.

At rest the database is its owner's alone (0600, in a 0700 state directory), and secret values are
encrypted (Fernet) with a key kept in its own file: a copy of the database shows no secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

Record = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, namespace TEXT NOT NULL, seq INTEGER NOT NULL, stage TEXT NOT NULL,
    scheduled_id TEXT, data TEXT NOT NULL, secrets TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS jobs_ns ON jobs (namespace, seq);
CREATE INDEX IF NOT EXISTS jobs_stage ON jobs (stage);
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
CREATE INDEX IF NOT EXISTS jobs_stage_seq ON jobs (stage, seq);
CREATE INDEX IF NOT EXISTS jobs_sched ON jobs (scheduled_id, seq);
CREATE TABLE IF NOT EXISTS job_labels (job_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS job_labels_kv ON job_labels (key, value, job_id);
CREATE INDEX IF NOT EXISTS job_labels_job ON job_labels (job_id);
CREATE TABLE IF NOT EXISTS scheduled (
    id TEXT PRIMARY KEY, namespace TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
    secrets TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS buckets (id TEXT PRIMARY KEY, namespace TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bucket_files (
    bucket_id TEXT NOT NULL, path TEXT NOT NULL, xet_hash TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL, uploaded_at TEXT NOT NULL, content_type TEXT,
    PRIMARY KEY (bucket_id, path));
CREATE TABLE IF NOT EXISTS xet_files (hash TEXT PRIMARY KEY, size INTEGER NOT NULL, segments TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS processes (job_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, started REAL NOT NULL);
CREATE TABLE IF NOT EXISTS bucket_versions (bucket_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS bucket_files_added AFTER INSERT ON bucket_files BEGIN
    INSERT INTO bucket_versions VALUES (NEW.bucket_id, 1)
    ON CONFLICT (bucket_id) DO UPDATE SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS bucket_files_changed AFTER UPDATE ON bucket_files BEGIN
    INSERT INTO bucket_versions VALUES (NEW.bucket_id, 1)
    ON CONFLICT (bucket_id) DO UPDATE SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS bucket_files_deleted AFTER DELETE ON bucket_files BEGIN
    INSERT INTO bucket_versions VALUES (OLD.bucket_id, 1)
    ON CONFLICT (bucket_id) DO UPDATE SET version = version + 1; END;
"""


def private_file(path: Path) -> None:
    """Create `path` readable by its owner only (or make it so)."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    path.chmod(0o600)


def _key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        path.chmod(0o600)
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return path.read_bytes().strip()


class Store:
    """One SQLite connection shared by the server's threads behind a lock (writes are tiny and fast)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)  # SQLite gives its -wal and -shm files the database's mode
        self._fernet = Fernet(_key(path.with_name("secrets.key")))
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        for extra in ("-wal", "-shm"):  # made 0644 by an older version
            with contextlib.suppress(FileNotFoundError):
                path.with_name(path.name + extra).chmod(0o600)

    def _seal(self, secrets: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(secrets).encode()).decode() if secrets else "{}"

    def _open(self, sealed: str) -> dict[str, str]:
        if sealed.startswith("{"):  # none, or written in clear by an older version
            return dict(json.loads(sealed))
        try:
            return dict(json.loads(self._fernet.decrypt(sealed.encode())))
        except InvalidToken:
            raise RuntimeError("the emulator's secrets.key does not match its database: secrets are lost") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- meta ------------------------------------------------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- jobs ------------------------------------------------------------------------------------
    def insert_job(self, job: Record, secrets: dict[str, str]) -> None:
        with self.transaction() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            sched = (
                (job.get("initiator") or {}).get("id")
                if job.get("initiator", {}).get("type") == "scheduled-job"
                else None
            )
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job["id"],
                    job["owner"]["name"],
                    seq,
                    job["status"]["stage"],
                    sched,
                    json.dumps(job),
                    self._seal(secrets),
                ),
            )
            self._write_labels(db, job["id"], job.get("labels") or {})

    @staticmethod
    def _write_labels(db: sqlite3.Connection, job_id: str, labels: dict[str, str]) -> None:
        db.execute("DELETE FROM job_labels WHERE job_id = ?", (job_id,))
        db.executemany("INSERT INTO job_labels VALUES (?, ?, ?)", [(job_id, k, v) for k, v in labels.items()])

    def update_job(self, job: Record) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE jobs SET stage = ?, data = ? WHERE id = ?",
                (job["status"]["stage"], json.dumps(job), job["id"]),
            )
            self._write_labels(db, job["id"], job.get("labels") or {})

    def job(self, job_id: str) -> Record | None:
        rows = self._query("SELECT data FROM jobs WHERE id = ?", (job_id,))
        return json.loads(rows[0][0]) if rows else None

    def job_secrets(self, job_id: str) -> dict[str, str]:
        rows = self._query("SELECT secrets FROM jobs WHERE id = ?", (job_id,))
        return self._open(rows[0][0]) if rows else {}

    def jobs(
        self,
        namespace: str | None = None,
        stages: Iterable[str] = (),
        labels: Iterable[tuple[str, str]] = (),
        scheduled_id: str | None = None,
        offset: int = 0,
        limit: int = -1,
        newest_first: bool = True,
    ) -> list[Record]:
        sql, args = ["SELECT data FROM jobs WHERE 1 = 1"], list[Any]()
        if namespace is not None:
            sql.append("AND namespace = ?")
            args.append(namespace)
        stages = list(stages)
        if stages:
            sql.append(f"AND stage IN ({','.join('?' * len(stages))})")
            args.extend(stages)
        for key, value in labels:
            sql.append("AND id IN (SELECT job_id FROM job_labels WHERE key = ? AND value = ?)")
            args.extend((key, value))
        if scheduled_id is not None:
            sql.append("AND scheduled_id = ?")
            args.append(scheduled_id)
        sql.append(f"ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ? OFFSET ?")
        args.extend((limit, offset))
        return [json.loads(row[0]) for row in self._query(" ".join(sql), args)]

    # -- job processes (so a later emulator can end what a dead one left running) -----------------
    def record_process(self, job_id: str, pid: int, started: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO processes VALUES (?, ?, ?)", (job_id, pid, started))

    def forget_process(self, job_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM processes WHERE job_id = ?", (job_id,))

    def processes(self) -> list[tuple[str, int, float]]:
        return [(str(j), int(p), float(t)) for j, p, t in self._query("SELECT job_id, pid, started FROM processes")]

    # -- scheduled jobs --------------------------------------------------------------------------
    def put_scheduled(self, sched: Record, secrets: dict[str, str] | None = None) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT seq, secrets FROM scheduled WHERE id = ?", (sched["id"],)).fetchone()
            if row is None:
                seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM scheduled").fetchone()[0]
                kept = "{}"
            else:
                seq, kept = row
            db.execute(
                "INSERT OR REPLACE INTO scheduled VALUES (?, ?, ?, ?, ?)",
                (
                    sched["id"],
                    sched["owner"]["name"],
                    seq,
                    json.dumps(sched),
                    self._seal(secrets) if secrets is not None else kept,
                ),
            )

    def update_scheduled(self, sched: Record) -> bool:
        """Write a changed scheduled job back; False (and nothing written) once it has been deleted."""
        with self.transaction() as db:
            cur = db.execute("UPDATE scheduled SET data = ? WHERE id = ?", (json.dumps(sched), sched["id"]))
            return cur.rowcount > 0

    def scheduled(self, sched_id: str) -> Record | None:
        rows = self._query("SELECT data FROM scheduled WHERE id = ?", (sched_id,))
        return json.loads(rows[0][0]) if rows else None

    def scheduled_secrets(self, sched_id: str) -> dict[str, str]:
        rows = self._query("SELECT secrets FROM scheduled WHERE id = ?", (sched_id,))
        return self._open(rows[0][0]) if rows else {}

    def all_scheduled(self, namespace: str | None = None) -> list[Record]:
        if namespace is None:
            rows = self._query("SELECT data FROM scheduled ORDER BY seq")
        else:
            rows = self._query("SELECT data FROM scheduled WHERE namespace = ? ORDER BY seq", (namespace,))
        return [json.loads(row[0]) for row in rows]

    def delete_scheduled(self, sched_id: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM scheduled WHERE id = ?", (sched_id,)).rowcount > 0

    # -- buckets ---------------------------------------------------------------------------------
    def put_bucket(self, bucket: Record) -> bool:
        """Insert a bucket; False when it exists already."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO buckets VALUES (?, ?, ?)",
                (bucket["id"], bucket["id"].split("/")[0], json.dumps(bucket)),
            )
            return cur.rowcount > 0

    def update_bucket(self, bucket: Record) -> None:
        with self.transaction() as db:
            db.execute("UPDATE buckets SET data = ? WHERE id = ?", (json.dumps(bucket), bucket["id"]))

    def bucket(self, bucket_id: str) -> Record | None:
        rows = self._query("SELECT data FROM buckets WHERE id = ?", (bucket_id,))
        return json.loads(rows[0][0]) if rows else None

    def buckets(self, namespace: str) -> list[Record]:
        rows = self._query("SELECT data FROM buckets WHERE namespace = ? ORDER BY id", (namespace,))
        return [json.loads(row[0]) for row in rows]

    def delete_bucket(self, bucket_id: str) -> bool:
        with self.transaction() as db:
            db.execute("DELETE FROM bucket_files WHERE bucket_id = ?", (bucket_id,))
            return db.execute("DELETE FROM buckets WHERE id = ?", (bucket_id,)).rowcount > 0

    def move_bucket(self, old: str, new: str) -> bool:
        """Rename a bucket with its files; False when `new` exists already."""
        with self.transaction() as db:
            row = db.execute("SELECT data FROM buckets WHERE id = ?", (old,)).fetchone()
            if row is None or db.execute("SELECT 1 FROM buckets WHERE id = ?", (new,)).fetchone():
                return False
            data = json.loads(row[0]) | {"id": new}
            db.execute(
                "UPDATE buckets SET id = ?, namespace = ?, data = ? WHERE id = ?",
                (new, new.split("/")[0], json.dumps(data), old),
            )
            db.execute("UPDATE bucket_files SET bucket_id = ? WHERE bucket_id = ?", (new, old))
            return True

    def has_hash(self, bucket_id: str, xet_hash: str) -> bool:
        """Whether a file of the bucket has this content."""
        return bool(
            self._query(
                "SELECT 1 FROM bucket_files WHERE bucket_id = ? AND xet_hash = ? LIMIT 1", (bucket_id, xet_hash)
            )
        )

    def bucket_stats(self, bucket_id: str) -> tuple[int, int]:
        rows = self._query(
            "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM bucket_files WHERE bucket_id = ?", (bucket_id,)
        )
        return int(rows[0][0]), int(rows[0][1])

    def bucket_version(self, bucket_id: str) -> int:
        """A number that changes whenever any file of the bucket does (triggers count every write)."""
        rows = self._query("SELECT version FROM bucket_versions WHERE bucket_id = ?", (bucket_id,))
        return int(rows[0][0]) if rows else 0

    def put_file(
        self,
        bucket_id: str,
        path: str,
        xet_hash: str,
        size: int,
        mtime_ms: int,
        uploaded_at: str,
        content_type: str | None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO bucket_files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bucket_id, path, xet_hash, size, mtime_ms, uploaded_at, content_type),
            )

    def delete_file(self, bucket_id: str, path: str) -> bool:
        with self.transaction() as db:
            cur = db.execute("DELETE FROM bucket_files WHERE bucket_id = ? AND path = ?", (bucket_id, path))
            return cur.rowcount > 0

    def files(self, bucket_id: str, prefix: str = "") -> list[Record]:
        """Files whose path starts with `prefix` (a folder prefix ends with `/`), sorted by path."""
        # A range on the primary key: a folder's files cost the same however large the bucket grows.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"
        rows = self._query(
            "SELECT path, xet_hash, size, mtime_ms, uploaded_at, content_type FROM bucket_files "
            "WHERE bucket_id = ? AND path >= ? AND path < ? ORDER BY path",
            (bucket_id, prefix, upper),
        )
        keys = ("path", "xetHash", "size", "mtimeMs", "uploadedAt", "contentType")
        return [dict(zip(keys, row, strict=False)) for row in rows]

    def file(self, bucket_id: str, path: str) -> Record | None:
        found = [f for f in self.files(bucket_id, path) if f["path"] == path]
        return found[0] if found else None

    # -- xet files (file hash -> the xorb segments it is made of) ---------------------------------
    def put_xet_files(self, files: dict[str, list[list[Any]]]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO xet_files VALUES (?, ?, ?)",  # a content address never changes
                [(h, sum(seg[3] for seg in segs), json.dumps(segs)) for h, segs in files.items()],
            )

    def xet_file(self, file_hash: str) -> list[list[Any]] | None:
        rows = self._query("SELECT segments FROM xet_files WHERE hash = ?", (file_hash,))
        return json.loads(rows[0][0]) if rows else None

    def xet_size(self, file_hash: str) -> int | None:
        rows = self._query("SELECT size FROM xet_files WHERE hash = ?", (file_hash,))
        return int(rows[0][0]) if rows else None
