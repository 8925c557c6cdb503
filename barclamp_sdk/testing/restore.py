"""Put a PostgreSQL-backed goiardi back to a saved state in one transaction (fast test set-ups).

Building a state through the API (machines, proposals, a commit) takes
seconds; putting it back from a copy of goiardi's tables takes a few
hundredths. :class:`DatabaseSnapshot` copies every table of the ``goiardi``
schema (and the values of its sequences) into a schema of its own once, and
``restore()`` puts them back: each table that differs emptied and filled
again by ``INSERT ... SELECT`` from the copy, ``setval`` of every sequence,
all in one transaction::

    snapshot = DatabaseSnapshot.of(chef_server.server)   # None with the in-memory store
    setup(crowbar)
    snapshot.take()
    for k in ...:
        snapshot.restore()                               # exactly as setup left it
        ...
    snapshot.drop()

Why a restore under a running goiardi is sound (goiardi 0.11, read in its
source, github.com/ctdk/goiardi): with ``--use-postgresql`` every object
read (``role.Get``, ``node.Get``, ``databag.Get`` and its items,
``environment.Get``, ``client.Get``, which also gives the signing keys) goes
to SQL (``config.UsingDB()`` branches); the in-process ``datastore`` cache
(go-cache) is used only by the in-memory store; with ``--pg-search`` the
search index is the ``search_items`` and ``search_collections`` tables, read
by SQL at each search. What goiardi does keep in process is work in flight:
``indexer.IndexObj`` indexes each saved object in a goroutine of its own,
after the request has been answered. So both ``take()`` and ``restore()``
first wait until no goiardi connection is inside a statement or a
transaction (``pg_stat_activity``), and ``restore()`` then checks every
table against the copy, row by row, and restores again if a late write
slipped in (:class:`RestoreError` after three tries). Files of the local
file store (cookbook uploads) are not covered; the tests upload none.

With the in-memory store (``CROWBAR_TEST_SERVER=memory``) there is no
database: :meth:`DatabaseSnapshot.of` returns None, and callers build the
state again through the API (the slow path).
"""

from __future__ import annotations

import subprocess
import uuid
from typing import TYPE_CHECKING

from barclamp_sdk.errors import CrowbarError
from barclamp_sdk.localdb import PostgresCluster

if TYPE_CHECKING:
    from barclamp_sdk.local import LocalChefServer

SCHEMA = "goiardi"
#: How long to wait for goiardi's connections to be idle, in hundredths of a second.
IDLE_WAIT = 6000


class RestoreError(CrowbarError):
    """The database could not be put back to the snapshot."""


def _wait_idle_sql() -> str:
    """A block that returns once no other client connection of this database is busy
    (in a statement, or inside a transaction), seen twice in a row."""
    return f"""
DO $$
DECLARE busy int; calm int := 0; tries int := 0;
BEGIN
  LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT count(*) INTO busy FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND backend_type = 'client backend' AND state IS DISTINCT FROM 'idle';
    IF busy = 0 THEN calm := calm + 1; ELSE calm := 0; END IF;
    EXIT WHEN calm >= 2;
    tries := tries + 1;
    IF tries > {IDLE_WAIT} THEN RAISE EXCEPTION 'goiardi stayed busy (% connections)', busy; END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
"""


class DatabaseSnapshot:
    """A copy of goiardi's tables and sequences, and the way back to it."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        #: The schema holding the copy (one per snapshot).
        self.schema = f"crowbar_snapshot_{uuid.uuid4().hex[:12]}"
        self.taken = False
        #: Restores done, and how many had to be repeated because a late write slipped in.
        self.restores = 0
        self.repeats = 0

    @classmethod
    def of(cls, server: LocalChefServer) -> DatabaseSnapshot | None:
        """A snapshot of ``server``'s database, or None when it runs the in-memory store."""
        return None if server.memory else cls(server.database)

    def _psql(self, sql: str) -> str:
        done = subprocess.run(self.cluster.psql(), input=sql, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RestoreError(f"PostgreSQL snapshot failed: {detail}")
        return done.stdout

    def take(self) -> None:
        """Copy every table and sequence value of goiardi (once its pending work is done)."""
        s = self.schema
        self._psql(_wait_idle_sql() + f"""
BEGIN ISOLATION LEVEL REPEATABLE READ;
DROP SCHEMA IF EXISTS {s} CASCADE;
CREATE SCHEMA {s};
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = '{SCHEMA}' LOOP
    EXECUTE format('CREATE TABLE {s}.%I AS TABLE {SCHEMA}.%I', t.tablename, t.tablename);
  END LOOP;
END $$;
CREATE TABLE {s}."__sequences" AS
  SELECT sequencename AS name, last_value, start_value FROM pg_sequences WHERE schemaname = '{SCHEMA}';
COMMIT;
""")
        self.taken = True

    def restore(self) -> None:
        """Put every table and sequence back as :meth:`take` found them, and check it (one
        ``psql`` run for both)."""
        if not self.taken:
            raise RestoreError("restore() before take(): nothing to restore")
        for attempt in range(3):
            if self._count(_wait_idle_sql() + self._restore_sql() + self._differences_sql()) == 0:
                self.restores += 1
                self.repeats += attempt
                return
        raise RestoreError(f"goiardi's tables still differ from snapshot {self.schema} after 3 restores")

    def _restore_sql(self) -> str:
        """Each table that differs from the copy emptied and refilled (small tables: ``DELETE``,
        cheaper than ``TRUNCATE``'s new files), every sequence set back; one transaction."""
        s = self.schema
        return self._differing_sql() + f"""
BEGIN;
SET LOCAL session_replication_role = replica;
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = '{s}' AND tablename <> '__sequences' LOOP
    IF pg_temp.differing(t.tablename) > 0 THEN
      EXECUTE format('DELETE FROM {SCHEMA}.%I', t.tablename);
      EXECUTE format('INSERT INTO {SCHEMA}.%I SELECT * FROM {s}.%I', t.tablename, t.tablename);
    END IF;
  END LOOP;
  FOR t IN SELECT * FROM {s}."__sequences" LOOP
    IF t.last_value IS NULL THEN
      PERFORM setval(format('{SCHEMA}.%I', t.name), t.start_value, false);
    ELSE
      PERFORM setval(format('{SCHEMA}.%I', t.name), t.last_value, true);
    END IF;
  END LOOP;
END $$;
COMMIT;
"""

    def differences(self) -> int:
        """Rows that differ between goiardi's tables and the copy (0: restored exactly), once
        goiardi's pending work is done."""
        return self._count(self._differing_sql() + self._differences_sql())

    def _count(self, sql: str) -> int:
        return int(self._psql(sql).strip().splitlines()[-1])

    def _differing_sql(self) -> str:
        """``pg_temp.differing(table)``: rows of goiardi's ``table`` not in the copy, and back."""
        s = self.schema
        return f"""
CREATE OR REPLACE FUNCTION pg_temp.differing(name text) RETURNS bigint AS $$
DECLARE n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM ((SELECT a::text FROM {SCHEMA}.%1$I a EXCEPT ALL SELECT b::text FROM {s}.%1$I b)'
                 ' UNION ALL (SELECT b::text FROM {s}.%1$I b EXCEPT ALL SELECT a::text FROM {SCHEMA}.%1$I a)) d',
                 name) INTO n;
  RETURN n;
END $$ LANGUAGE plpgsql;
"""

    def _differences_sql(self) -> str:
        """The total of :meth:`_differing_sql` over every table, once goiardi's pending work is done."""
        return _wait_idle_sql() + f"""
SELECT coalesce(sum(pg_temp.differing(tablename)), 0) FROM pg_tables
 WHERE schemaname = '{self.schema}' AND tablename <> '__sequences';
"""

    def drop(self) -> None:
        """Remove the copy."""
        self._psql(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE;")
        self.taken = False
