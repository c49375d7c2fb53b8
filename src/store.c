/* SPDX-License-Identifier: MIT */
/*
 * store: the records table in SQLite (replication.md §1); see include/arborkv/store.h.
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

/*
 * FILE AND PRAGMAS
 *
 * File: <dir>/arborkv.db. Its tables, and how arborkv recognizes its own file and brings an
 * older one up to date: SCHEMA in src/store_schema.c.
 *
 * Pragmas (file engine):
 *   locking_mode            EXCLUSIVE while store_open validates the file (store_schema_check), so
 *                           a refused file gets no -shm file and its WAL is not touched; then
 *                           the connection is reopened with NORMAL locking, which the checkpointer
 *                           (src/checkpoint.c) needs (EXCLUSIVE admits no second connection). The
 *                           WAL index is then the shared-memory file <db>-shm, removed at
 *                           close. A second arborkv on the same directory is kept off by the
 *                           lock file (STORE_LOCK_FILE, flock, held from open to close), not by
 *                           SQLite.
 *   journal_mode=WAL        a commit appends the changed pages to the WAL; no rollback journal.
 *   synchronous=NORMAL|FULL STORE_DURABLE_PROCESS: a commit survives kill -9 (the WAL is
 *                           written at commit, fsynced at checkpoint); STORE_DURABLE_POWER:
 *                           fsync at every commit, survives power loss. The checkpointer's
 *                           connection has the same setting, so checkpoints sync as before.
 *   wal_autocheckpoint=0    no checkpoint inside the loop's commits: see CHECKPOINTER in
 *                           src/checkpoint.c.
 *   journal_size_limit      the WAL file is cut back to this size when it restarts, so one
 *                           huge transaction (or a long burst) does not leave a huge file behind.
 *   cache_size=-65536       64 MiB page cache, so the hot part of the key b-tree stays in memory.
 *   temp_store=MEMORY       sorter and temp b-trees never touch disk.
 *   busy_timeout            STORE_BUSY_TIMEOUT_MS: only matters at open, when another process
 *                           holds the lock.
 * VFS: the loop's connection opens the file through walvfs (include/arborkv/walvfs.h), which
 * passes a commit's WAL frames to the file in one write instead of two per page (store_bench
 * insert 15.6 -> 9.6 us); the checkpointer's connection, which writes no frames, uses the default.
 * mmap is left off: with the page cache above it gains little, and an I/O error through a
 * mapping is a SIGBUS instead of an error code. page_size stays 4096 (2048 was no faster
 * overall and made lookups in a 1M-key table slower). Process-wide, SQLite's memory statistics
 * are switched off before its first use (SQLITE_CONFIG_MEMSTATUS): they take a global mutex on
 * every allocation, ~5% of a GET.
 */
#define STORE_DB_FILE         "arborkv.db"
#define STORE_BUSY_TIMEOUT_MS 200        /* ms; waiting for another process's lock at open */
#define STORE_CACHE_KIB       65536      /* KiB of page cache (PRAGMA cache_size = -N) */
#define STORE_WAL_LIMIT_BYTES (64 * 1024 * 1024) /* WAL file size kept after a checkpoint */
#define STORE_LOCK_FILE       "arborkv.lock"

/*
 * Live count and largest ts at open, in one pass over the table. ts >= 2^63 is stored negative,
 * and such values are larger than every non-negative one as uint64, so when any exist the
 * answer is the largest negative one.
 */
static const char max_ts_sql[] = "SELECT sum(tombstone = 0), max(ts),"
                                 " max(CASE WHEN ts < 0 THEN ts END) FROM records";

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

static const struct {
    const char *op; /* operation name in log messages */
    const char *sql;
} stmt_defs[STMT_COUNT] = {
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

/* Writes a formatted reason into err (errlen bytes, NUL-terminated) and returns rc. */
__attribute__((format(printf, 4, 5))) static int set_err(char *err, size_t errlen, int rc,
                                                         const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

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

static int run(struct store *st, enum stmt_id id);

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
    if (run(st, STMT_BEGIN) == 0) st->read_open = true;
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

/* ---- open ---------------------------------------------------------------------------------- */

/* Maps an errno from a file-system call to the store's vocabulary. */
static int errno_rc(int e)
{
    return (e == EACCES || e == EPERM || e == EROFS) ? -EACCES : -EIO;
}

/* Creates dir and its missing parents (parents 0755, dir itself 0700, minus umask). */
static int mkdir_p(const char *dir, char *err, size_t errlen)
{
    char *p = xstrdup(dir);
    int rc = 0;
    size_t len = strlen(p);
    for (size_t i = 1; i <= len && rc == 0; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        if (p[i - 1] == '/') continue; /* "//" or a trailing "/" */
        char saved = p[i];
        p[i] = '\0';
        bool last = i == len || (saved == '/' && strspn(p + i + 1, "/") == len - i - 1);
        if (mkdir(p, last ? 0700 : 0755) != 0) {
            int e = errno;
            struct stat sb;
            if (stat(p, &sb) != 0) {
                rc = set_err(err, errlen, errno_rc(e), "cannot create directory %s: %s", p,
                             strerror(e));
            } else if (!S_ISDIR(sb.st_mode)) {
                rc = set_err(err, errlen, -EINVAL, "%s exists and is not a directory", p);
            }
        }
        p[i] = saved;
    }
    free(p);
    return rc;
}

/*
 * Looks at an existing file before SQLite opens it: a file that does not start with the SQLite
 * magic is refused without SQLite ever touching it. Returns 1 when the file exists (and may be
 * a SQLite database, or is empty), 0 when it does not, or a negative errno with err set.
 */
static int sniff_file(const char *path, char *err, size_t errlen)
{
    static const char magic[16] = "SQLite format 3"; /* 15 characters and a NUL */
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) return 0;
        return set_err(err, errlen, errno_rc(errno), "%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) return set_err(err, errlen, -EINVAL, "%s: not a regular file", path);
    if (sb.st_size == 0) return 1; /* an empty file is an empty SQLite database */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return set_err(err, errlen, errno_rc(errno), "%s: %s", path, strerror(errno));
    char head[sizeof(magic)];
    ssize_t n = pread(fd, head, sizeof(head), 0);
    int e = errno;
    (void) close(fd);
    if (n < 0) return set_err(err, errlen, errno_rc(e), "%s: %s", path, strerror(e));
    if ((size_t) n < sizeof(head) || memcmp(head, magic, sizeof(magic)) != 0)
        return set_err(err, errlen, -EBADMSG, "%s: file is not a database", path);
    return 1;
}

/*
 * Whether the directory holding path denies us creating files (the database's WAL and journal
 * live next to it). Used to explain SQLITE_CANTOPEN, whose errno is often that of SQLite's
 * read-only fallback (ENOENT) rather than the EACCES that caused it.
 */
static bool dir_denied(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return false;
    char *dir = xstrndup(path, (size_t) (slash - path));
    bool denied = access(*dir ? dir : "/", W_OK | X_OK) != 0 &&
                  (errno == EACCES || errno == EPERM || errno == EROFS);
    free(dir);
    return denied;
}

/* Maps a SQLite failure during store_open to an errno and a reason in err. */
static int open_error(struct store *st, const char *path, const char *op, int sqlrc, char *err,
                      size_t errlen)
{
    const char *msg = st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(sqlrc);
    int sys = st->db ? sqlite3_system_errno(st->db) : 0;
    if ((sqlrc & 0xff) == SQLITE_CANTOPEN && st->engine == STORE_ENGINE_SQLITE && dir_denied(path))
        sys = EACCES;
    switch (sqlrc & 0xff) {
    case SQLITE_NOTADB:
        return set_err(err, errlen, -EBADMSG, "%s: file is not a database", path);
    case SQLITE_CORRUPT:
        return set_err(err, errlen, -EIO, "%s: database is corrupt (%s: %s)", path, op, msg);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return set_err(err, errlen, -EACCES, "%s: permission denied (%s: %s)", path, op, msg);
    case SQLITE_CANTOPEN:
        if (sys == EACCES || sys == EPERM || sys == EROFS)
            return set_err(err, errlen, -EACCES, "%s: permission denied (%s: %s: %s)", path, op,
                           msg, strerror(sys));
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return set_err(err, errlen, -EIO,
                       "%s: database is locked by another process (another arborkv on this "
                       "storage_path?)",
                       path);
    default:
        break;
    }
    if (sys) return set_err(err, errlen, -EIO, "%s: %s: %s (%s)", path, op, msg, strerror(sys));
    return set_err(err, errlen, -EIO, "%s: %s: %s", path, op, msg);
}

/* Runs one or more SQL statements without results. Returns the SQLite code. */
static int exec_sql(struct store *st, const char *sql)
{
    return sqlite3_exec(st->db, sql, NULL, NULL, NULL);
}

/* Runs a one-row query and stores its first n integer columns in out. Returns the SQLite code. */
static int query_ints(struct store *st, const char *sql, int64_t *out, int n, bool *null)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        for (int i = 0; i < n; i++) {
            if (null) null[i] = sqlite3_column_type(s, i) == SQLITE_NULL;
            out[i] = sqlite3_column_int64(s, i);
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT; /* these queries always return one row */
    }
    /* finalize reports the step's error again, which rc already holds. */
    int frc = sqlite3_finalize(s);
    return rc != SQLITE_OK ? rc : frc;
}

/* store_schema_check, with a failure of SQLite explained as at every step of opening. */
static int check_schema(struct store *st, const char *path, char *err, size_t errlen)
{
    int sqlrc = SQLITE_OK;
    int version = store_schema_check(st->db, path, &sqlrc, err, errlen);
    if (version < 0 && sqlrc != SQLITE_OK)
        return open_error(st, path, "read header", sqlrc, err, errlen);
    return version;
}

/* store_schema_migrate; a step that failed is explained, then rolled back. */
static int migrate(struct store *st, int from, const char *path, char *err, size_t errlen)
{
    int rc = store_schema_migrate(st->db, from);
    if (rc == SQLITE_OK) return 0;
    int erc = open_error(st, path, "create schema", rc, err, errlen);
    if (!sqlite3_get_autocommit(st->db)) (void) exec_sql(st, "ROLLBACK");
    return erc;
}

/* Sets the pragmas listed in FILE AND PRAGMAS. */
static int set_pragmas(struct store *st, enum store_durability durability, const char *path,
                       char *err, size_t errlen)
{
    char sql[256];
    (void) snprintf(sql, sizeof(sql),
                    "PRAGMA synchronous = %s; PRAGMA cache_size = -%d; PRAGMA temp_store = MEMORY;",
                    durability == STORE_DURABLE_POWER ? "FULL" : "NORMAL", STORE_CACHE_KIB);
    int rc = exec_sql(st, sql);
    if (rc != SQLITE_OK) return open_error(st, path, "pragmas", rc, err, errlen);
    if (st->engine != STORE_ENGINE_SQLITE) return 0;
    (void) snprintf(sql, sizeof(sql),
                    "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = %d;",
                    STORE_WAL_LIMIT_BYTES);
    rc = exec_sql(st, sql);
    if (rc != SQLITE_OK) return open_error(st, path, "pragmas", rc, err, errlen);

    /* journal_mode answers with the mode in force; anything but "wal" means WAL was refused. */
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    bool wal = rc == SQLITE_ROW &&
               sqlite3_stricmp((const char *) sqlite3_column_text(s, 0), "wal") == 0;
    if (rc == SQLITE_ROW) rc = SQLITE_OK;
    int frc = sqlite3_finalize(s);
    if (rc == SQLITE_OK) rc = frc;
    if (rc != SQLITE_OK) return open_error(st, path, "journal_mode", rc, err, errlen);
    if (!wal) return set_err(err, errlen, -EIO, "%s: cannot switch to WAL mode", path);
    return 0;
}

/*
 * Computes live_count and max_ts_at_open. This reads every leaf page of records (not the
 * overflow pages of large values), so a damaged b-tree page (bad header, cell pointers or
 * child page numbers) shows up here as SQLITE_CORRUPT and the open fails with -EIO; so does a
 * damaged sqlite_schema, parsed by the first query. We do not run PRAGMA quick_check at open:
 * it also verifies key order, overflow chains and the free list, but it reads every overflow
 * page, i.e. every byte of every large value, at each restart (with 1M small records it cost
 * 0.16 s against 0.12 s for this scan; with GiBs of values it costs a full read of them).
 */
static int load_counts(struct store *st, const char *path, char *err, size_t errlen)
{
    int64_t v[3]; /* live rows (NULL when empty), max(ts), largest negative ts */
    bool null[3];
    int rc = query_ints(st, max_ts_sql, v, 3, null);
    if (rc != SQLITE_OK) return open_error(st, path, "count records", rc, err, errlen);
    st->live_count = (uint64_t) v[0];
    st->max_ts_at_open = !null[2] ? (uint64_t) v[2] : null[1] ? 0 : (uint64_t) v[1];
    rc = query_ints(st, "SELECT count(*), coalesce(sum(nevents), 0) FROM outbox", v, 2, NULL);
    if (rc != SQLITE_OK) return open_error(st, path, "count outbox", rc, err, errlen);
    st->outbox_rows_at_open = (uint64_t) v[0];
    st->outbox_events_at_open = (uint64_t) v[1];
    rc = query_ints(st,
                    "SELECT coalesce((SELECT value FROM meta WHERE name = 'purge_horizon'), 0)",
                    v, 1, NULL);
    if (rc != SQLITE_OK) return open_error(st, path, "read purge horizon", rc, err, errlen);
    st->horizon = (uint64_t) v[0];
    return 0;
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
static int lock_dir(struct store *st, const char *dir, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(dir) + sizeof("/" STORE_LOCK_FILE);
    char *lpath = xmalloc(n);
    (void) snprintf(lpath, n, "%s/%s", dir, STORE_LOCK_FILE);
    int rc = 0;
    st->lock_fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (st->lock_fd < 0) {
        int e = errno;
        if (errno_rc(e) == -EACCES)
            rc = set_err(err, errlen, -EACCES, "%s: permission denied (lock file %s: %s)", path,
                         lpath, strerror(e));
        else
            rc = set_err(err, errlen, -EIO, "%s: lock file %s: %s", path, lpath, strerror(e));
    } else if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            rc = set_err(err, errlen, -EIO,
                         "%s: database is locked by another process (another arborkv on this "
                         "storage_path?)",
                         path);
        else
            rc = set_err(err, errlen, -EIO, "%s: flock: %s", lpath, strerror(errno));
    }
    free(lpath);
    return rc;
}

/*
 * Process-wide SQLite settings, applied before SQLite initializes itself (sqlite3_config is
 * refused once it has, e.g. at a second store_open: then they are already in place or it is
 * too late, and either way the store works). Single-threaded like the rest of the store.
 */
static void configure_library(void)
{
    static bool done;
    if (done) return;
    done = true;
    int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc != SQLITE_OK && rc != SQLITE_MISUSE)
        log_warn("store: sqlite3_config(MEMSTATUS): %s", sqlite3_errstr(rc));
}

int store_open(struct store **out, enum store_engine engine, const char *dir,
               enum store_durability durability, char *err, size_t errlen)
{
    configure_library();
    struct store *st = xcalloc(1, sizeof(*st));
    char *path = NULL;
    int rc = 0, sqlrc = SQLITE_OK;
    buf_init(&st->scan_lo);
    buf_init(&st->scan_hi);
    st->engine = engine;
    st->lock_fd = -1;
    *out = NULL;
    if (err && errlen) err[0] = '\0';

    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    const char *vfs = NULL; /* the default VFS, or walvfs for the file engine */
    if (engine == STORE_ENGINE_SQLITE) {
        if (walvfs_register() == 0) vfs = WALVFS_NAME; /* else logged; the default works too */
        if (!dir || !*dir) {
            rc = set_err(err, errlen, -EINVAL, "storage path is empty");
            goto fail;
        }
        rc = mkdir_p(dir, err, errlen);
        if (rc < 0) goto fail;
        size_t n = strlen(dir) + sizeof("/" STORE_DB_FILE);
        path = xmalloc(n);
        (void) snprintf(path, n, "%s/%s", dir, STORE_DB_FILE);
        rc = lock_dir(st, dir, path, err, errlen);
        if (rc < 0) goto fail;
        rc = sniff_file(path, err, errlen);
        if (rc < 0) goto fail;
        /* Never create over an existing file: without SQLITE_OPEN_CREATE a file that vanished
         * in between fails instead of being replaced. */
        if (rc == 0) flags |= SQLITE_OPEN_CREATE;
        rc = 0;
    } else {
        path = xstrdup(":memory:");
        flags |= SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY;
    }

    sqlrc = sqlite3_open_v2(path, &st->db, flags, vfs);
    if (sqlrc == SQLITE_OK) sqlrc = sqlite3_extended_result_codes(st->db, 1);
    if (sqlrc == SQLITE_OK) sqlrc = sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
    /* Before the first read of the file; see FILE AND PRAGMAS. */
    if (sqlrc == SQLITE_OK && engine == STORE_ENGINE_SQLITE)
        sqlrc = exec_sql(st, "PRAGMA locking_mode = EXCLUSIVE");
    if (sqlrc != SQLITE_OK) {
        rc = open_error(st, path, "open", sqlrc, err, errlen);
        goto fail;
    }
    /* READWRITE silently falls back to read-only on a write-protected file. */
    if (sqlite3_db_readonly(st->db, "main") == 1) {
        rc = set_err(err, errlen, -EACCES, "%s: permission denied (read-only file)", path);
        goto fail;
    }

    int version = check_schema(st, path, err, errlen);
    if (version < 0) {
        rc = version;
        goto fail;
    }
    rc = set_pragmas(st, durability, path, err, errlen);
    if (rc == 0) rc = migrate(st, version, path, err, errlen); /* no-op when current */
    if (rc == 0) rc = load_counts(st, path, err, errlen);
    if (rc < 0) goto fail;
    if (engine == STORE_ENGINE_SQLITE) {
        /* Validated under EXCLUSIVE locking; reopen with NORMAL locking (FILE AND PRAGMAS). The
         * counts stay right: the lock file keeps every other writer away. */
        sqlrc = sqlite3_close(st->db);
        if (sqlrc != SQLITE_OK) {
            rc = open_error(st, path, "reopen", sqlrc, err, errlen);
            goto fail;
        }
        st->db = NULL;
        sqlrc = sqlite3_open_v2(path, &st->db, flags & ~SQLITE_OPEN_CREATE, vfs);
        if (sqlrc == SQLITE_OK) sqlrc = sqlite3_extended_result_codes(st->db, 1);
        if (sqlrc == SQLITE_OK) sqlrc = sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
        if (sqlrc != SQLITE_OK) {
            rc = open_error(st, path, "reopen", sqlrc, err, errlen);
            goto fail;
        }
        rc = set_pragmas(st, durability, path, err, errlen);
        if (rc < 0) goto fail;
    }

    for (int i = 0; i < STMT_COUNT; i++) {
        sqlrc = sqlite3_prepare_v3(st->db, stmt_defs[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                                   &st->stmt[i], NULL);
        if (sqlrc != SQLITE_OK) {
            rc = open_error(st, path, "prepare", sqlrc, err, errlen);
            goto fail;
        }
    }
    if (engine == STORE_ENGINE_SQLITE) {
        rc = ckpt_start(&st->ckpt, st->db, path, durability == STORE_DURABLE_POWER, err, errlen);
        if (rc < 0) goto fail;
    }

    free(path);
    *out = st;
    return 0;

fail:
    /* A refused file must stay byte-identical: no checkpoint of someone else's WAL on close. */
    if (st->db) (void) sqlite3_db_config(st->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    store_close(st);
    free(path);
    return rc < 0 ? rc : -EIO;
}

void store_close(struct store *st)
{
    if (!st) return;
    ckpt_stop(st->ckpt); /* first: the loop's connection closes last, removing WAL and -shm */
    st->ckpt = NULL;
    if (st->db) {
        store_end_read(st);
        store_rollback(st);
        for (int i = 0; i < STMT_COUNT; i++) {
            /* Every statement was reset after use, so finalize has no error to repeat. */
            if (sqlite3_finalize(st->stmt[i]) != SQLITE_OK)
                log_error("store: finalize: %s", sqlite3_errmsg(st->db));
            st->stmt[i] = NULL;
        }
        if (sqlite3_close(st->db) != SQLITE_OK)
            log_error("store: close: %s", sqlite3_errmsg(st->db)); /* the handle leaks */
    }
    if (st->lock_fd >= 0) (void) close(st->lock_fd); /* after SQLite: releases the lock */
    free(st->undo);
    buf_clear(&st->scan_lo);
    buf_clear(&st->scan_hi);
    free(st);
}

/* ---- transactions -------------------------------------------------------------------------- */

/* Steps a statement that returns no rows. Returns 0 or -EIO (logged). */
static int run(struct store *st, enum stmt_id id)
{
    sqlite3_stmt *s = st->stmt[id];
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return sql_fail(st, s, stmt_defs[id].op);
    return finish(st, s, stmt_defs[id].op);
}

int store_begin(struct store *st)
{
    release_pending(st);
    if (st->in_txn) return 0;
    if (st->txn_failed) return -EIO; /* an earlier BEGIN of this turn failed */
    int rc = st->read_open ? 0 : run(st, STMT_BEGIN); /* the turn's reads began it already */
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
    if (!sqlite3_get_autocommit(st->db)) (void) run(st, STMT_ROLLBACK); /* logs on failure */
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
    int rc = run(st, STMT_COMMIT);
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
    (void) run(st, STMT_COMMIT); /* logs on failure; nothing was written */
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
    int rc = run(st, id);
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
        return sql_fail(st, s, stmt_defs[STMT_OUTBOX_ADD].op);
    }
    *id = (uint64_t) sqlite3_last_insert_rowid(st->db);
    return finish(st, s, stmt_defs[STMT_OUTBOX_ADD].op);
}

int store_outbox_delete(struct store *st, uint64_t id)
{
    release_pending(st);
    assert(st->in_txn);
    sqlite3_stmt *s = st->stmt[STMT_OUTBOX_DEL];
    if (sqlite3_bind_int64(s, 1, (sqlite3_int64) id) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_DONE) {
        st->txn_failed = true;
        return sql_fail(st, s, stmt_defs[STMT_OUTBOX_DEL].op);
    }
    int changed = sqlite3_changes(st->db);
    int rc = finish(st, s, stmt_defs[STMT_OUTBOX_DEL].op);
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
    if (rc == SQLITE_DONE) return finish(st, s, stmt_defs[STMT_OUTBOX_NEXT].op);
    if (rc != SQLITE_ROW) return sql_fail(st, s, stmt_defs[STMT_OUTBOX_NEXT].op);
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
    int rc = sqlite3_prepare_v2(st->db, "SELECT key, tombstone, ts, op_id, value FROM records",
                                -1, &s, NULL);
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
