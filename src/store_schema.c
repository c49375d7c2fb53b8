/* SPDX-License-Identifier: MIT */
/*
 * store_schema: the tables of the store's database and the migrations that bring a database of
 * an older arborkv up to date; see src/store_int.h.
 *
 * Apart from store.c so that a schema change is this file (a new entry in migrations,
 * STORE_SCHEMA_VERSION bumped) plus the statements in store.c that read and write the tables,
 * and the open path stays readable. Existing data directories must open with every later
 * arborkv: tests/test_store.c builds databases at older versions and opens them.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <sqlite3.h>

#include "store_int.h"

/*
 * SCHEMA
 *
 * File: <dir>/arborkv.db (store.c). Marked as ours by PRAGMA application_id =
 * STORE_APPLICATION_ID ("arkv") and versioned by PRAGMA user_version = STORE_SCHEMA_VERSION;
 * both are set in the transaction that creates the tables. A file with another application_id,
 * or with tables but no marker, is another application's database and is refused; a larger
 * user_version is a newer arborkv and is refused with -ENOTSUP. Later tables (the replication
 * outbox) arrive as migrations[2], … : a new entry, STORE_SCHEMA_VERSION bumped, and open
 * applies the missing steps in one transaction each.
 *
 * records (schema version 1):
 *   key        BLOB PRIMARY KEY   binary key; WITHOUT ROWID, so the table *is* the key b-tree
 *                                 and a lookup is one descent; BLOB affinity and BINARY collation
 *                                 order keys by memcmp, shorter first on a common prefix.
 *   tombstone  INTEGER NOT NULL   1 = delete marker (value NULL), 0 = live.
 *   ts         INTEGER NOT NULL   HLC ns as the int64 bit pattern of the uint64 (exact round trip;
 *                                 SQL-side order is only wrong past 2262: store.c, max_ts_sql).
 *   op_id      BLOB NOT NULL      16 bytes.
 *   value      BLOB               the value, X'' for an empty value, NULL for a tombstone.
 * The columns are declared in this order (value last) on purpose: a WITHOUT ROWID record stores
 * columns in declaration order, so tombstone/ts/op_id sit in the b-tree cell before the value and
 * key-only and LIVE scans, get_rec's metadata and the count at open never walk the overflow
 * pages of large values (100 values of 1 MiB: 21 page reads instead of 25,721 with value
 * declared second).
 */
#define STORE_APPLICATION_ID 1634888566 /* 0x61726b76, "arkv" */
#define STORE_SCHEMA_VERSION 6          /* PRAGMA user_version of a current database */

static const char *const migrations[STORE_SCHEMA_VERSION + 1] = {
    [1] = "CREATE TABLE records ("
          " key BLOB PRIMARY KEY NOT NULL,"
          " tombstone INTEGER NOT NULL,"
          " ts INTEGER NOT NULL,"
          " op_id BLOB NOT NULL,"
          " value BLOB"
          ") WITHOUT ROWID;",
    /* The replication outbox (replication.md §3): one row per event message, written in the
     * transaction of the writes it carries, deleted when the broker acknowledges it.
     * AUTOINCREMENT: ids are never reused, so a late acknowledgement of a message published
     * twice cannot delete a newer row. */
    [2] = "CREATE TABLE outbox ("
          " id INTEGER PRIMARY KEY AUTOINCREMENT,"
          " nevents INTEGER NOT NULL,"
          " payload BLOB NOT NULL"
          ");",
    /* The Merkle tree's key hash (merkle.h), indexed. (Version 4 drops the index, version 6 the
     * column.) */
    [3] = "ALTER TABLE records ADD COLUMN khash INTEGER NOT NULL DEFAULT 0;"
          "CREATE INDEX records_khash ON records(khash);",
    /* The khash index made every new key dirty a second random page (inserts 2.5x slower in
     * tools/store_bench); anti-entropy lists a bucket's records with a filtered scan instead
     * (docs/anti-entropy.md). (Version 6 drops the column too.) */
    [4] = "DROP INDEX IF EXISTS records_khash;",
    /* Tombstone purge (docs/anti-entropy.md): a partial index over tombstones only, so finding
     * the expired ones never scans live rows and writes of live values never touch it; and the
     * purge horizon (the largest ts of a tombstone ever purged here), which must survive
     * restarts. */
    [5] = "CREATE INDEX records_tombstones ON records(ts) WHERE tombstone = 1;"
          "CREATE TABLE meta ("
          " name TEXT PRIMARY KEY NOT NULL,"
          " value INTEGER NOT NULL"
          ") WITHOUT ROWID;",
    /* Nothing reads the key hash column since version 4: the tree is built from the keys at
     * start-up and anti-entropy hashes the keys it scans. Yet every insert still wrote it.
     * DROP COLUMN (SQLite >= 3.35; meson.build asks for 3.40) rewrites the table, once: the
     * first open after the upgrade reads and writes every row in this step's transaction
     * (1,000,000 records, 83 MiB: 0.4 s, and as much WAL, checkpointed when store_open closes
     * the connection to reopen it). */
    [6] = "ALTER TABLE records DROP COLUMN khash;",
};

int store_schema_check(sqlite3 *db, const char *path, int *sqlrc, char *err, size_t errlen)
{
    int64_t v[3] = { 0 }; /* application_id, user_version, schema objects */
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT (SELECT application_id FROM pragma_application_id),"
                                " (SELECT user_version FROM pragma_user_version),"
                                " (SELECT count(*) FROM sqlite_schema)",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        for (int i = 0; i < 3; i++)
            v[i] = sqlite3_column_int64(s, i);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT; /* the query always returns one row */
    }
    /* finalize reports the step's error again, which rc already holds. */
    int frc = sqlite3_finalize(s);
    if (rc == SQLITE_OK) rc = frc;
    if (rc != SQLITE_OK) {
        *sqlrc = rc;
        return -EIO;
    }
    if (v[0] == 0 && v[1] == 0 && v[2] == 0) return 0; /* empty: ours to initialize */
    if (v[0] != STORE_APPLICATION_ID)
        return reason_printf(
                err, errlen, -EBADMSG,
                "%s: a SQLite database of another application (no arborkv marker), not touched",
                path);
    if (v[1] > STORE_SCHEMA_VERSION)
        return reason_printf(err, errlen, -ENOTSUP,
                             "%s: schema version %lld is newer than this arborkv supports (%d)",
                             path, (long long) v[1], STORE_SCHEMA_VERSION);
    if (v[1] < 1)
        return reason_printf(err, errlen, -EBADMSG, "%s: arborkv marker without a schema version",
                             path);
    return (int) v[1];
}

int store_schema_migrate(sqlite3 *db, int from)
{
    for (int v = from + 1; v <= STORE_SCHEMA_VERSION; v++) {
        char marks[128];
        (void) snprintf(marks, sizeof(marks),
                        "PRAGMA application_id = %d; PRAGMA user_version = %d;",
                        STORE_APPLICATION_ID, v);
        int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc == SQLITE_OK) rc = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
        if (rc == SQLITE_OK) rc = sqlite3_exec(db, marks, NULL, NULL, NULL);
        if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) return rc; /* the caller explains it, then rolls back */
    }
    return SQLITE_OK;
}
