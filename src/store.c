/* SPDX-License-Identifier: MIT */
/*
 * store: the records table in SQLite (replication.md §1); see include/arborkv/store.h. Opening
 * and closing are store_open.c's, the schema store_schema.c's, checkpoints checkpoint.c's.
 *
 * One connection, owned by the event-loop thread (THREADING: single-threaded, SQLITE_OPEN_NOMUTEX).
 * (The WAL checkpointer, src/checkpoint.c, has a second one on a thread of its own.)
 * Every statement is prepared once in store_open() and finalized in store_close(). After use a
 * statement is sqlite3_reset() and sqlite3_clear_bindings(); the one exception is the statement
 * whose column memory was handed out as [borrow] pointers (store_get, store_get_rec): it stays
 * un-reset in st->pending and release_pending() resets it at the start of the next call into the
 * store, which is exactly the documented lifetime of those pointers. Bindings are SQLITE_STATIC:
 * SQLite reads the caller's key/value bytes only while sqlite3_step() runs inside our call.
 *
 * Only this file sees SQLITE_* codes. A failure at run time is logged once here
 * ("store: <op>: <sqlite3_errmsg>") and returned as -EIO; store_open() does not log (the caller
 * reports the err text it returns) and maps what it finds to -EBADMSG / -ENOTSUP / -EACCES /
 * -EINVAL / -EIO.
 *
 * Invariants: live_count is the number of rows with tombstone = 0 as seen by this connection
 * (committed rows plus the open transaction's); live_count_at_begin is its value when the open
 * transaction began, restored on rollback. A failed write poisons the open transaction
 * (txn_failed): later puts fail and store_commit() rolls back, so a turn is all or nothing.
 */
#include "arborkv/store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "arborkv/buf.h"
#include "arborkv/checkpoint.h"
#include "arborkv/log.h"
#include "arborkv/mem.h"
#include "arborkv/merkle.h"
#include "arborkv/walvfs.h"
#include "store_int.h"

const struct store_stmt_def store_stmt_defs[STMT_COUNT] = {
    [STMT_GET] = { "get", "SELECT tombstone, value FROM records WHERE key = ?1" },
    [STMT_GET_REC] = { "get_rec",
                       "SELECT tombstone, ts, op_id, value FROM records WHERE key = ?1" },
    [STMT_PROBE] = { "put", "SELECT tombstone, ts, op_id, value FROM records WHERE key = ?1" },
    [STMT_INSERT] = { "put", "INSERT INTO records (key, tombstone, ts, op_id, value)"
                             " VALUES (?1, ?2, ?3, ?4, ?5)" },
    [STMT_UPDATE] = { "put", "UPDATE records SET tombstone = ?2, ts = ?3, op_id = ?4, value = ?5"
                             " WHERE key = ?1" },
    [STMT_SCAN] = { "scan", "SELECT key, tombstone, ts, op_id, value FROM records"
                            " WHERE key >= ?1 ORDER BY key" },
    [STMT_SCAN_HI] = { "scan", "SELECT key, tombstone, ts, op_id, value FROM records"
                               " WHERE key >= ?1 AND key < ?2 ORDER BY key" },
    [STMT_SCAN_KEYS] = { "scan", "SELECT key, tombstone, ts, op_id FROM records"
                                 " WHERE key >= ?1 ORDER BY key" },
    [STMT_SCAN_KEYS_HI] = { "scan", "SELECT key, tombstone, ts, op_id FROM records"
                                    " WHERE key >= ?1 AND key < ?2 ORDER BY key" },
    [STMT_OUTBOX_ADD] = { "outbox add", "INSERT INTO outbox (nevents, payload) VALUES (?1, ?2)" },
    [STMT_OUTBOX_DEL] = { "outbox delete", "DELETE FROM outbox WHERE id = ?1" },
    [STMT_OUTBOX_NEXT] = { "outbox read", "SELECT id, nevents, payload FROM outbox WHERE id > ?1"
                                          " ORDER BY id LIMIT 1" },
    /* ts >= 0: a ts of 2^63 or more is stored negative and is in the far future, never expired.
     * "tombstone = 1" makes the planner use the partial index records_tombstones. */
    [STMT_EXPIRED] = { "purge", "SELECT key, tombstone, ts, op_id FROM records WHERE tombstone = 1"
                                " AND ts >= 0 AND ts < ?1 ORDER BY ts LIMIT ?2" },
    [STMT_DELETE] = { "purge", "DELETE FROM records WHERE key = ?1" },
    [STMT_HORIZON_SET] = { "purge", "INSERT INTO meta (name, value) VALUES ('purge_horizon', ?1)"
                                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value" },
    [STMT_BEGIN] = { "begin", "BEGIN IMMEDIATE" },
    [STMT_COMMIT] = { "commit", "COMMIT" },
    [STMT_ROLLBACK] = { "rollback", "ROLLBACK" },
};

/* One tree change of the open transaction: digest old (if has_old) replaced by new (if has_new). */
struct undo {
    uint32_t khash; /* merkle_key_hash(key): the leaf of the tree the change is in */
    bool has_old, has_new;
    uint8_t old[MERKLE_DIGEST_LEN];
    uint8_t new_digest[MERKLE_DIGEST_LEN];
};

/* Stands in for a NULL pointer of a zero-length key or value: SQLite binds (NULL, 0) as SQL
 * NULL, not as an empty blob, and hands back NULL for an empty blob. */
static const uint8_t empty_bytes[1];

/* Resets the statement behind the last [borrow] pointers, if any. */
static void release_pending(struct store *st)
{
    assert(!st->in_scan); /* store_scan callbacks must not call into the store */
    sqlite3_stmt *s = st->pending;
    if (!s) return;
    st->pending = NULL;
    /* The statement's last step returned SQLITE_ROW, so reset reports success; a failure here
     * would be a SQLite bug, still logged rather than ignored. */
    if (sqlite3_reset(s) != SQLITE_OK) log_error("store: reset: %s", sqlite3_errmsg(st->db));
    (void) sqlite3_clear_bindings(s); /* always SQLITE_OK */
}

/*
 * Start of a read: the reads of a loop turn share one transaction, opened by the first and
 * ended by store_end_read (or continued by store_begin and ended by the commit). In autocommit
 * mode every read took and dropped SQLite's shared lock, two fcntl calls per GET: 89% of the
 * syscall time under GET -P 16 (docs/benchmarks.md). If BEGIN fails (logged), reads go on in
 * autocommit mode.
 */
static void reading(struct store *st)
{
    release_pending(st);
    if (st->in_txn || st->read_open) return;
    if (store_run(st, STMT_BEGIN) == 0) st->read_open = true;
}

/* Resets s after a completed (or abandoned) use. Returns 0, or -EIO (logged) on failure. */
static int finish(struct store *st, sqlite3_stmt *s, const char *op)
{
    int rc = sqlite3_reset(s);
    (void) sqlite3_clear_bindings(s); /* always SQLITE_OK */
    if (rc == SQLITE_OK) return 0;
    log_error("store: %s: %s", op, sqlite3_errmsg(st->db));
    return -EIO;
}

/* Logs the connection's current error for op, resets s (when given) and returns -EIO. */
static int sql_fail(struct store *st, sqlite3_stmt *s, const char *op)
{
    log_error("store: %s: %s", op, sqlite3_errmsg(st->db));
    if (s) {
        (void) sqlite3_reset(s); /* repeats the error just logged */
        (void) sqlite3_clear_bindings(s);
    }
    return -EIO;
}

/* Binds n bytes at p as a BLOB (an empty blob when n == 0, whatever p is). */
static int bind_bytes(sqlite3_stmt *s, int i, const uint8_t *p, size_t n)
{
    return sqlite3_bind_blob64(s, i, n ? (const void *) p : empty_bytes, n, SQLITE_STATIC);
}

/* Column i as (pointer, length); never NULL, also for an empty blob or SQL NULL. */
static const uint8_t *column_bytes(sqlite3_stmt *s, int i, size_t *len)
{
    const uint8_t *p = sqlite3_column_blob(s, i);
    *len = (size_t) sqlite3_column_bytes(s, i); /* after column_blob, as the docs require */
    return p ? p : empty_bytes;
}

/*
 * Fills rec from a row laid out as (…, tombstone @ c, ts @ c+1, op_id @ c+2[, value @ c+3]).
 * An op_id of the wrong length (a hand-edited file) is truncated or zero-padded rather than
 * failing every scan that meets it; LWW (replication.md §1) still converges on such records.
 */
static void fill_rec(sqlite3_stmt *s, int c, bool with_value, struct store_rec *rec)
{
    rec->tombstone = sqlite3_column_int64(s, c) != 0;
    rec->ts = (uint64_t) sqlite3_column_int64(s, c + 1);
    size_t n;
    const uint8_t *op = column_bytes(s, c + 2, &n);
    if (n > STORE_OP_ID_BYTES) n = STORE_OP_ID_BYTES;
    memcpy(rec->op_id, op, n);
    memset(rec->op_id + n, 0, STORE_OP_ID_BYTES - n);
    if (with_value && !rec->tombstone) {
        rec->value = column_bytes(s, c + 3, &rec->value_len);
    } else {
        rec->value = NULL;
        rec->value_len = 0;
    }
}

/* ---- checkpoints (src/checkpoint.c) ------------------------------------------------------- */

void store_maintain(struct store *st)
{
    if (!st || !st->ckpt || st->in_txn || st->read_open) return;
    if (!ckpt_tail_ready(st->ckpt)) return;
    release_pending(st); /* its read snapshot would hold the last frames back */
    ckpt_maintain(st->ckpt);
}

uint64_t store_wal_frames(const struct store *st)
{
    return st->ckpt ? ckpt_wal_frames(st->ckpt) : 0;
}

/* Takes the directory's lock file (FILE AND PRAGMAS). Returns 0 or a negative errno. */
/* ---- transactions -------------------------------------------------------------------------- */

/* Steps a statement that returns no rows. Returns 0 or -EIO (logged). */
int store_run(struct store *st, enum stmt_id id)
{
    sqlite3_stmt *s = st->stmt[id];
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return sql_fail(st, s, store_stmt_defs[id].op);
    return finish(st, s, store_stmt_defs[id].op);
}

int store_begin(struct store *st)
{
    release_pending(st);
    if (st->in_txn) return 0;
    if (st->txn_failed) return -EIO; /* an earlier BEGIN of this turn failed */
    int rc = st->read_open ? 0 : store_run(st, STMT_BEGIN); /* the turn's reads began it already */
    if (rc < 0) {
        st->txn_failed = true; /* the turn's writes have nowhere to go: it fails (store.h) */
        return rc;
    }
    st->read_open = false;
    st->in_txn = true;
    st->live_count_at_begin = st->live_count;
    st->horizon_at_begin = st->horizon;
    return 0;
}

/* Ends the open transaction with ROLLBACK (unless SQLite already rolled it back) and restores
 * the live count. */
static void end_with_rollback(struct store *st)
{
    /* Some errors (SQLITE_FULL, IOERR, NOMEM) make SQLite roll back by itself. */
    if (!sqlite3_get_autocommit(st->db)) (void) store_run(st, STMT_ROLLBACK); /* logs on failure */
    st->in_txn = false;
    st->txn_failed = false;
    st->live_count = st->live_count_at_begin;
    st->horizon = st->horizon_at_begin;
    /* The tree follows the data back, newest change first. */
    while (st->nundo) {
        const struct undo *u = &st->undo[--st->nundo];
        merkle_apply(st->tree, u->khash, u->has_new ? u->new_digest : NULL,
                     u->has_old ? u->old : NULL);
    }
}

int store_commit(struct store *st)
{
    release_pending(st);
    if (!st->in_txn) {
        if (!st->txn_failed) return 0;
        st->txn_failed = false; /* a BEGIN failed: nothing to roll back, the turn still failed */
        return -EIO;
    }
    if (st->txn_failed) {
        log_error("store: commit: a write of this transaction failed, rolling back");
        end_with_rollback(st);
        return -EIO;
    }
    int rc = store_run(st, STMT_COMMIT);
    if (rc < 0) {
        end_with_rollback(st);
        return rc;
    }
    st->in_txn = false;
    st->nundo = 0;
    return 0;
}

void store_rollback(struct store *st)
{
    release_pending(st);
    if (st->in_txn) end_with_rollback(st);
    st->txn_failed = false;
}

bool store_in_txn(const struct store *st)
{
    return st->in_txn;
}

bool store_txn_failed(const struct store *st)
{
    return st->txn_failed;
}

void store_end_read(struct store *st)
{
    if (!st || !st->read_open) return;
    release_pending(st);
    st->read_open = false;
    if (sqlite3_get_autocommit(st->db)) return; /* ended by SQLite (an error rolled it back) */
    (void) store_run(st, STMT_COMMIT);          /* logs on failure; nothing was written */
}

/* ---- reads --------------------------------------------------------------------------------- */

int store_get(struct store *st, const uint8_t *key, size_t key_len, const uint8_t **value,
              size_t *value_len)
{
    reading(st);
    sqlite3_stmt *s = st->stmt[STMT_GET];
    if (bind_bytes(s, 1, key, key_len) != SQLITE_OK) return sql_fail(st, s, "get");
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && sqlite3_column_int64(s, 0) == 0) {
        *value = column_bytes(s, 1, value_len);
        st->pending = s; /* reset by the next call: *value points into the row */
        return 1;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sql_fail(st, s, "get");
    return finish(st, s, "get"); /* absent or a tombstone: 0 */
}

int store_get_rec(struct store *st, const uint8_t *key, size_t key_len, struct store_rec *rec)
{
    reading(st);
    sqlite3_stmt *s = st->stmt[STMT_GET_REC];
    if (bind_bytes(s, 1, key, key_len) != SQLITE_OK) return sql_fail(st, s, "get_rec");
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return finish(st, s, "get_rec");
    if (rc != SQLITE_ROW) return sql_fail(st, s, "get_rec");
    rec->key = key_len ? key : empty_bytes; /* the caller's bytes: equal to the stored key */
    rec->key_len = key_len;
    fill_rec(s, 0, true, rec);
    st->pending = s;
    return 1;
}

/* ---- writes -------------------------------------------------------------------------------- */

/*
 * Keeping the live count exact needs the previous tombstone state, which neither
 * INSERT OR REPLACE nor an UPSERT's RETURNING can report (RETURNING sees the new row). So a put
 * is a probe (one b-tree descent; the pages are then hot in the cache) followed by an UPDATE in
 * place or an INSERT. That measured faster than INSERT OR REPLACE, which deletes and re-inserts
 * the cell (see tools/store_bench.c).
 */
/* Remembers a tree change of the open transaction, for rollback. */
static void track(struct store *st, const struct undo *u)
{
    if (st->nundo == st->undo_cap) {
        st->undo_cap = st->undo_cap ? st->undo_cap * 2 : 64;
        st->undo = xrealloc(st->undo, st->undo_cap * sizeof(*st->undo));
    }
    st->undo[st->nundo++] = *u;
}

/*
 * Checks the caller holds a healthy open transaction, the contract of every write (a failed one
 * was logged already and will be rolled back). Returns 0 or -EIO.
 */
static int writable(struct store *st, const char *op)
{
    release_pending(st);
    assert(st->in_txn); /* caller contract: writes happen inside store_begin/store_commit */
    if (!st->in_txn) {
        log_error("store: %s: no open transaction", op);
        st->txn_failed = true;
        return -EIO;
    }
    return st->txn_failed ? -EIO : 0;
}

/*
 * Writes rec. supersede_ts: store_put_local's ts rule. cond: store_put_if's condition; with one,
 * the probe runs in the turn's read transaction (reading), which store_begin continues as the
 * write transaction only when the write goes ahead (no other connection writes the table, so
 * what the probe saw is still current).
 */
static int put(struct store *st, const struct store_rec *rec, uint64_t *supersede_ts,
               store_cond_fn *cond, void *arg)
{
    if (cond) {
        reading(st);
        if (st->txn_failed) return -EIO;
    } else if (writable(st, "put") < 0) {
        return -EIO;
    }

    sqlite3_stmt *s = st->stmt[STMT_PROBE];
    int rc = bind_bytes(s, 1, rec->key, rec->key_len);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) goto fail;
    bool existed = rc == SQLITE_ROW;
    struct store_rec old = { .key = rec->key, .key_len = rec->key_len };
    if (existed) fill_rec(s, 0, true, &old); /* columns tombstone, ts, op_id, value */
    if (cond) {
        int c = cond(arg, existed ? &old : NULL, rec);
        if (c != 0) return finish(st, s, "put") < 0 ? -EIO : c; /* nothing written: no poison */
    }
    bool was_live = existed && !old.tombstone;
    uint64_t ts = rec->ts;
    if (supersede_ts && existed && ts <= old.ts && old.ts != UINT64_MAX) ts = old.ts + 1;
    struct undo u = { .has_old = existed, .has_new = true };
    if (st->tree) {
        u.khash = merkle_key_hash(rec->key, rec->key_len);
        if (existed) merkle_record_digest(&old, u.old);
        struct store_rec now = *rec;
        now.ts = ts;
        merkle_record_digest(&now, u.new_digest);
    }
    if (finish(st, s, "put") < 0) goto poisoned;
    if (!st->in_txn && store_begin(st) < 0) return -EIO; /* cond only; nothing written yet */

    s = st->stmt[existed ? STMT_UPDATE : STMT_INSERT];
    rc = bind_bytes(s, 1, rec->key, rec->key_len);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 2, rec->tombstone ? 1 : 0);
    /* uint64 -> int64 keeps the bit pattern (two's complement), read back with a cast. */
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 3, (sqlite3_int64) ts);
    if (rc == SQLITE_OK) rc = bind_bytes(s, 4, rec->op_id, STORE_OP_ID_BYTES);
    if (rc == SQLITE_OK)
        rc = rec->tombstone ? sqlite3_bind_null(s, 5)
                            : bind_bytes(s, 5, rec->value, rec->value_len);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) goto fail;
    if (finish(st, s, "put") < 0) goto poisoned;

    if (was_live && rec->tombstone)
        st->live_count--;
    else if (!was_live && !rec->tombstone)
        st->live_count++;
    if (supersede_ts) *supersede_ts = ts;
    if (st->tree) {
        merkle_apply(st->tree, u.khash, u.has_old ? u.old : NULL, u.new_digest);
        track(st, &u);
    }
    return 0;

fail:
    (void) sql_fail(st, s, "put");
poisoned:
    st->txn_failed = true;
    return -EIO;
}

int store_put(struct store *st, const struct store_rec *rec)
{
    return put(st, rec, NULL, NULL, NULL);
}

int store_put_if(struct store *st, const struct store_rec *rec, store_cond_fn *cond, void *arg)
{
    return put(st, rec, NULL, cond, arg);
}

int store_put_local(struct store *st, struct store_rec *rec)
{
    uint64_t ts = rec->ts;
    int rc = put(st, rec, &ts, NULL, NULL);
    if (rc == 0) rec->ts = ts;
    return rc;
}

/* ---- purge --------------------------------------------------------------------------------- */

/* Marks the open transaction failed after a SQLite error on s (logged) and returns -EIO. */
static int poison(struct store *st, sqlite3_stmt *s, const char *op)
{
    (void) sql_fail(st, s, op);
    st->txn_failed = true;
    return -EIO;
}

/* run() for a statement of the open transaction, whose parameters are bound: a failure poisons
 * the transaction. */
static int run_write(struct store *st, enum stmt_id id)
{
    int rc = store_run(st, id);
    if (rc < 0) st->txn_failed = true;
    return rc;
}

/* Raises the purge horizon to ts (never lowers it), in the open transaction. */
static int raise_horizon(struct store *st, uint64_t ts)
{
    if (ts <= st->horizon) return 0;
    sqlite3_stmt *s = st->stmt[STMT_HORIZON_SET];
    if (sqlite3_bind_int64(s, 1, (sqlite3_int64) ts) != SQLITE_OK) return poison(st, s, "purge");
    int rc = run_write(st, STMT_HORIZON_SET);
    if (rc == 0) st->horizon = ts;
    return rc;
}

/* Deletes the row of old->key, whose stored contents old describes, and takes its digest out
 * of the tree. Raises the horizon to old->ts. */
static int delete_rec(struct store *st, const struct store_rec *old)
{
    sqlite3_stmt *s = st->stmt[STMT_DELETE];
    if (bind_bytes(s, 1, old->key, old->key_len) != SQLITE_OK) return poison(st, s, "purge");
    int rc = run_write(st, STMT_DELETE);
    if (rc < 0) return rc;
    if (!old->tombstone) st->live_count--;
    if (st->tree) {
        struct undo u = { .khash = merkle_key_hash(old->key, old->key_len), .has_old = true };
        merkle_record_digest(old, u.old);
        merkle_apply(st->tree, u.khash, u.old, NULL);
        track(st, &u);
    }
    return raise_horizon(st, old->ts);
}

int store_purge(struct store *st, uint64_t before, size_t limit, uint64_t *purged)
{
    *purged = 0;
    int rc = writable(st, "purge");
    if (rc < 0) return rc;
    if (before > INT64_MAX) before = INT64_MAX;
    if (limit > INT64_MAX) limit = INT64_MAX;

    /* Collect first (key length, key, ts, op_id per row), delete after: no writes to the table
     * while a statement still walks it. */
    struct buf rows;
    buf_init(&rows);
    size_t n = 0;
    sqlite3_stmt *s = st->stmt[STMT_EXPIRED];
    rc = sqlite3_bind_int64(s, 1, (sqlite3_int64) before);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 2, (sqlite3_int64) limit);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        size_t klen;
        const uint8_t *key = column_bytes(s, 0, &klen);
        struct store_rec r;
        fill_rec(s, 1, false, &r);
        buf_append(&rows, &klen, sizeof(klen));
        buf_append(&rows, key, klen);
        buf_append(&rows, &r.ts, sizeof(r.ts));
        buf_append(&rows, r.op_id, sizeof(r.op_id));
        n++;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE) {
        buf_clear(&rows);
        return poison(st, s, "purge");
    }
    if (finish(st, s, "purge") < 0) {
        st->txn_failed = true;
        buf_clear(&rows);
        return -EIO;
    }
    const uint8_t *p = rows.data;
    for (size_t i = 0; i < n && rc >= 0; i++) {
        struct store_rec r = { .tombstone = true };
        memcpy(&r.key_len, p, sizeof(r.key_len));
        r.key = p + sizeof(r.key_len);
        p = r.key + r.key_len;
        memcpy(&r.ts, p, sizeof(r.ts));
        memcpy(r.op_id, p + sizeof(r.ts), sizeof(r.op_id));
        p += sizeof(r.ts) + sizeof(r.op_id);
        if (r.key_len == 0) r.key = empty_bytes;
        rc = delete_rec(st, &r);
    }
    buf_clear(&rows);
    if (rc < 0) return rc;
    *purged = n;
    return 0;
}

int store_drop(struct store *st, const struct store_rec *rec)
{
    int rc = writable(st, "drop");
    if (rc < 0) return rc;
    struct store_rec cur;
    rc = store_get_rec(st, rec->key, rec->key_len, &cur);
    if (rc <= 0) return rc;
    bool same = cur.ts == rec->ts && !memcmp(cur.op_id, rec->op_id, STORE_OP_ID_BYTES) &&
                cur.tombstone == rec->tombstone;
    if (!same) return 0;
    /* cur's pointers die with the next statement: describe the row with the caller's bytes
     * (equal, the key by lookup and the rest by the check above) and the stored value. */
    struct store_rec old = *rec;
    struct buf value;
    buf_init(&value);
    if (!cur.tombstone) buf_append(&value, cur.value, cur.value_len);
    old.value = cur.tombstone ? NULL : (value.len ? value.data : empty_bytes);
    old.value_len = cur.tombstone ? 0 : value.len;
    release_pending(st);
    rc = delete_rec(st, &old);
    buf_clear(&value);
    return rc < 0 ? rc : 1;
}

uint64_t store_purge_horizon(const struct store *st)
{
    return st->horizon;
}

/* ---- scans --------------------------------------------------------------------------------- */

/* memcmp order with the shorter key first on a common prefix, as SQLite compares blobs. */
static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

/*
 * The smallest key greater than every key starting with prefix: drop trailing 0xFF bytes and
 * increment the last remaining one. Returns false when there is none (empty prefix, or only
 * 0xFF bytes): the range is then unbounded above.
 */
static bool prefix_successor(const uint8_t *prefix, size_t len, struct buf *out)
{
    while (len > 0 && prefix[len - 1] == 0xFF)
        len--;
    if (len == 0) return false;
    buf_reset(out);
    buf_append(out, prefix, len);
    out->data[len - 1]++;
    return true;
}

int store_scan(struct store *st, const uint8_t *prefix, size_t prefix_len, const uint8_t *after,
               size_t after_len, unsigned flags, store_scan_fn *fn, void *arg)
{
    reading(st);
    bool keys_only = flags & STORE_SCAN_KEYS_ONLY;
    bool live = flags & STORE_SCAN_LIVE;

    /* Lower bound: the larger of prefix (inclusive) and after (exclusive). key > after is
     * written key >= after || 0x00, the next key in blob order, so one statement shape does. */
    const uint8_t *lo = prefix;
    size_t lo_len = prefix_len;
    if (after && key_cmp(after, after_len, prefix, prefix_len) >= 0) {
        buf_reset(&st->scan_lo);
        buf_append(&st->scan_lo, after, after_len);
        buf_append(&st->scan_lo, "", 1);
        lo = st->scan_lo.data;
        lo_len = st->scan_lo.len;
    }
    bool bounded = prefix_successor(prefix, prefix_len, &st->scan_hi);
    enum stmt_id id = keys_only ? (bounded ? STMT_SCAN_KEYS_HI : STMT_SCAN_KEYS)
                                : (bounded ? STMT_SCAN_HI : STMT_SCAN);
    sqlite3_stmt *s = st->stmt[id];
    int rc = bind_bytes(s, 1, lo, lo_len);
    if (rc == SQLITE_OK && bounded) rc = bind_bytes(s, 2, st->scan_hi.data, st->scan_hi.len);
    if (rc != SQLITE_OK) return sql_fail(st, s, "scan");

    int ret = 0;
    st->in_scan = true;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_rec rec;
        rec.key = column_bytes(s, 0, &rec.key_len);
        fill_rec(s, 1, !keys_only, &rec);
        if (live && rec.tombstone) continue;
        ret = fn(arg, &rec);
        if (ret != 0) break;
    }
    st->in_scan = false;
    if (ret == 0 && rc != SQLITE_DONE) return sql_fail(st, s, "scan");
    int frc = finish(st, s, "scan");
    return ret != 0 ? ret : frc;
}

/* ---- accessors ----------------------------------------------------------------------------- */

uint64_t store_live_count(const struct store *st)
{
    return st->live_count;
}

uint64_t store_max_ts_at_open(const struct store *st)
{
    return st->max_ts_at_open;
}

const char *store_engine_name(const struct store *st)
{
    return st->engine == STORE_ENGINE_MEMORY ? "memory" : "sqlite";
}

/* ---- replication outbox ------------------------------------------------------------------- */

int store_outbox_add(struct store *st, const uint8_t *payload, size_t len, uint32_t nevents,
                     uint64_t *id)
{
    release_pending(st);
    assert(st->in_txn);
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_ADD];
    if (sqlite3_bind_int64(s, 1, nevents) != SQLITE_OK ||
        bind_bytes(s, 2, payload, len) != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE) {
        st->txn_failed = true;
        return sql_fail(st, s, store_stmt_defs[STMT_OUTBOX_ADD].op);
    }
    *id = (uint64_t) sqlite3_last_insert_rowid(st->db);
    return finish(st, s, store_stmt_defs[STMT_OUTBOX_ADD].op);
}

int store_outbox_delete(struct store *st, uint64_t id)
{
    release_pending(st);
    assert(st->in_txn);
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_DEL];
    if (sqlite3_bind_int64(s, 1, (sqlite3_int64) id) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_DONE) {
        st->txn_failed = true;
        return sql_fail(st, s, store_stmt_defs[STMT_OUTBOX_DEL].op);
    }
    int changed = sqlite3_changes(st->db);
    int rc = finish(st, s, store_stmt_defs[STMT_OUTBOX_DEL].op);
    return rc < 0 ? rc : changed > 0;
}

int store_outbox_next(struct store *st, uint64_t after, uint64_t *id, uint32_t *nevents,
                      const uint8_t **payload, size_t *len)
{
    reading(st);
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_NEXT];
    if (sqlite3_bind_int64(s, 1, (sqlite3_int64) after) != SQLITE_OK)
        return sql_fail(st, s, "outbox read");
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return finish(st, s, store_stmt_defs[STMT_OUTBOX_NEXT].op);
    if (rc != SQLITE_ROW) return sql_fail(st, s, store_stmt_defs[STMT_OUTBOX_NEXT].op);
    *id = (uint64_t) sqlite3_column_int64(s, 0);
    *nevents = (uint32_t) sqlite3_column_int64(s, 1);
    *payload = column_bytes(s, 2, len);
    st->pending = s; /* the [borrow] payload lives until the next call */
    return 1;
}

void store_outbox_counts_at_open(const struct store *st, uint64_t *rows, uint64_t *events)
{
    *rows = st->outbox_rows_at_open;
    *events = st->outbox_events_at_open;
}

/* ---- Merkle tree ------------------------------------------------------------------------- */

int store_attach_tree(struct store *st, struct merkle *m)
{
    release_pending(st);
    assert(!st->in_txn && !st->tree);
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, "SELECT key, tombstone, ts, op_id, value FROM records", -1,
                                &s, NULL);
    if (rc != SQLITE_OK) return sql_fail(st, NULL, "build tree");
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_rec rec;
        rec.key = column_bytes(s, 0, &rec.key_len);
        fill_rec(s, 1, true, &rec);
        uint8_t d[MERKLE_DIGEST_LEN];
        merkle_record_digest(&rec, d);
        merkle_apply(m, merkle_key_hash(rec.key, rec.key_len), NULL, d);
    }
    /* finalize reports the step's error again, which rc already holds. */
    (void) sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return sql_fail(st, NULL, "build tree");
    st->tree = m;
    return 0;
}
