/* SPDX-License-Identifier: MIT */
/*
 * store_int.h: internals shared by store.c (the records, transactions, reads, writes, purge, scans,
 * outbox), store_open.c (opening and closing: files, pragmas, schema, statements) and
 * store_schema.c (what the tables are and how a database of an older version is brought up to
 * date). Private to the store: never include it elsewhere, as nothing else may see SQLite.
 *
 * Both functions run inside store_open(), on the loop's connection while it is opened with
 * EXCLUSIVE locking, before any statement is prepared. They report SQLite failures as SQLite
 * codes and leave the explanation to store_open (store.c, open_error), which maps every SQLite
 * failure of opening the same way: not a database, corrupt, permission denied, locked.
 */
#ifndef ARBORKV_STORE_INT_H
#define ARBORKV_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "arborkv/buf.h"
#include "arborkv/store.h"

struct ckpt;
struct merkle;
struct undo; /* store.c: one tree change of the open transaction */

/* The prepared statements of the loop's connection. */
enum stmt_id {
    STMT_GET,          /* live value of ?1 */
    STMT_GET_REC,      /* full record of ?1 */
    STMT_PROBE,        /* the record of ?1, for the live count and the tree */
    STMT_INSERT,       /* new record */
    STMT_UPDATE,       /* overwrite the record of ?1 */
    STMT_SCAN,         /* key >= ?1, all columns */
    STMT_SCAN_HI,      /* ?1 <= key < ?2, all columns */
    STMT_SCAN_KEYS,    /* key >= ?1, no value */
    STMT_SCAN_KEYS_HI, /* ?1 <= key < ?2, no value */
    STMT_OUTBOX_ADD,   /* new outbox message */
    STMT_OUTBOX_DEL,   /* drop outbox message ?1 */
    STMT_OUTBOX_NEXT,  /* oldest outbox message with id > ?1 */
    STMT_EXPIRED,      /* tombstones with 0 <= ts < ?1, oldest first, at most ?2 */
    STMT_DELETE,       /* drop the record of ?1 */
    STMT_HORIZON_SET,  /* raise the purge horizon to ?1 */
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_COUNT
};

/* What each statement is (store.c): prepared in store_open, finalized in store_close. */
struct store_stmt_def {
    const char *op; /* operation name in log messages */
    const char *sql;
};
extern const struct store_stmt_def store_stmt_defs[STMT_COUNT];

struct store {
    sqlite3 *db;                    /* the connection; NULL only while half-built */
    int lock_fd;                    /* STORE_LOCK_FILE, flock'ed; -1 for the memory engine */
    struct ckpt *ckpt;              /* the checkpointer (checkpoint.h), NULL for memory */
    sqlite3_stmt *stmt[STMT_COUNT]; /* prepared in store_open, finalized in store_close */
    sqlite3_stmt *pending;          /* un-reset statement backing [borrow] pointers, or NULL */
    enum store_engine engine;       /* STORE_ENGINE_SQLITE or STORE_ENGINE_MEMORY */
    bool in_txn;                    /* store_begin() ran and no commit/rollback since */
    bool read_open;                 /* a read opened a transaction (store_end_read ends it) */
    bool txn_failed;                /* a write failed in the open transaction: roll back */
    bool in_scan;                   /* store_scan is calling back (re-entry is a bug) */
    uint64_t live_count;            /* rows with tombstone = 0, this connection's view */
    uint64_t live_count_at_begin;   /* live_count when the open transaction began */
    uint64_t max_ts_at_open;        /* largest ts stored at open, 0 when empty */
    uint64_t outbox_rows_at_open;   /* outbox messages at open */
    uint64_t outbox_events_at_open; /* events in them */
    uint64_t horizon;               /* purge horizon (store_purge_horizon), this connection's */
    uint64_t horizon_at_begin;      /* horizon when the open transaction began */
    struct merkle *tree;            /* [borrow] tree kept in step with the records, or NULL */
    struct undo *undo;              /* tree changes of the open transaction, for rollback */
    size_t nundo, undo_cap;
    struct buf scan_lo; /* scratch: lower bound of the current scan */
    struct buf scan_hi; /* scratch: upper bound (prefix successor) */
};

/* BEGIN, COMMIT or ROLLBACK on the loop's connection (store.c). Returns 0 or -EIO (logged). */
int store_run(struct store *st, enum stmt_id id);

/*
 * Reads the marker of an opened database (application_id, user_version). Returns its schema
 * version, 0 for an empty database (ours to initialize), or a negative errno with a reason in
 * err (errlen bytes, NUL-terminated) when the file is not ours to open: -EBADMSG (another
 * application's database, or our marker without a version) or -ENOTSUP (a newer arborkv's).
 * When SQLite fails to read it: -EIO with *sqlrc set and err untouched, for the caller to
 * explain from sqlite3_errmsg(db).
 */
int store_schema_check(struct sqlite3 *db, const char *path, int *sqlrc, char *err, size_t errlen);

/*
 * Brings a database of schema version from (0: empty) to the current one, one transaction per
 * version, each setting the marker with its tables. Returns SQLITE_OK (also when it is current),
 * or the SQLite code of the step that failed: that step's transaction is then still open, so
 * that the caller can read sqlite3_errmsg(db), and the caller rolls it back (the steps before it
 * stay committed; the next open goes on from there).
 */
int store_schema_migrate(struct sqlite3 *db, int from);

#endif
