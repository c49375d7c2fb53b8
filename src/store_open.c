/* SPDX-License-Identifier: MIT */
/*
 * store_open: opening and closing the store (store.h: store_open, store_close): the directory and
 * its lock file, refusing files that are not ours, the pragmas, the schema (store_schema.c), the
 * counts kept in memory, the prepared statements, the checkpointer. What the store does once
 * open is store.c's; internals both share are in store_int.h.
 */
#include "arborkv/store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
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
#define STORE_BUSY_TIMEOUT_MS 200   /* ms; waiting for another process's lock at open */
#define STORE_CACHE_KIB       65536 /* KiB of page cache (PRAGMA cache_size = -N) */
#define STORE_WAL_LIMIT_BYTES (64 * 1024 * 1024) /* WAL file size kept after a checkpoint */
#define STORE_LOCK_FILE       "arborkv.lock"

/*
 * Live count and largest ts at open, in one pass over the table. ts >= 2^63 is stored negative,
 * and such values are larger than every non-negative one as uint64, so when any exist the
 * answer is the largest negative one.
 */
static const char max_ts_sql[] = "SELECT sum(tombstone = 0), max(ts),"
                                 " max(CASE WHEN ts < 0 THEN ts END) FROM records";

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
                rc = reason_printf(err, errlen, errno_rc(e), "cannot create directory %s: %s", p,
                                   strerror(e));
            } else if (!S_ISDIR(sb.st_mode)) {
                rc = reason_printf(err, errlen, -EINVAL, "%s exists and is not a directory", p);
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
        return reason_printf(err, errlen, errno_rc(errno), "%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode))
        return reason_printf(err, errlen, -EINVAL, "%s: not a regular file", path);
    if (sb.st_size == 0) return 1; /* an empty file is an empty SQLite database */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return reason_printf(err, errlen, errno_rc(errno), "%s: %s", path, strerror(errno));
    char head[sizeof(magic)];
    ssize_t n = pread(fd, head, sizeof(head), 0);
    int e = errno;
    (void) close(fd);
    if (n < 0) return reason_printf(err, errlen, errno_rc(e), "%s: %s", path, strerror(e));
    if ((size_t) n < sizeof(head) || memcmp(head, magic, sizeof(magic)) != 0)
        return reason_printf(err, errlen, -EBADMSG, "%s: file is not a database", path);
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
        return reason_printf(err, errlen, -EBADMSG, "%s: file is not a database", path);
    case SQLITE_CORRUPT:
        return reason_printf(err, errlen, -EIO, "%s: database is corrupt (%s: %s)", path, op, msg);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return reason_printf(err, errlen, -EACCES, "%s: permission denied (%s: %s)", path, op, msg);
    case SQLITE_CANTOPEN:
        if (sys == EACCES || sys == EPERM || sys == EROFS)
            return reason_printf(err, errlen, -EACCES, "%s: permission denied (%s: %s: %s)", path,
                                 op, msg, strerror(sys));
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return reason_printf(err, errlen, -EIO,
                             "%s: database is locked by another process (another arborkv on this "
                             "storage_path?)",
                             path);
    default:
        break;
    }
    if (sys)
        return reason_printf(err, errlen, -EIO, "%s: %s: %s (%s)", path, op, msg, strerror(sys));
    return reason_printf(err, errlen, -EIO, "%s: %s: %s", path, op, msg);
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
    if (!wal) return reason_printf(err, errlen, -EIO, "%s: cannot switch to WAL mode", path);
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
    rc = query_ints(st, "SELECT coalesce((SELECT value FROM meta WHERE name = 'purge_horizon'), 0)",
                    v, 1, NULL);
    if (rc != SQLITE_OK) return open_error(st, path, "read purge horizon", rc, err, errlen);
    st->horizon = (uint64_t) v[0];
    return 0;
}

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
            rc = reason_printf(err, errlen, -EACCES, "%s: permission denied (lock file %s: %s)",
                               path, lpath, strerror(e));
        else
            rc = reason_printf(err, errlen, -EIO, "%s: lock file %s: %s", path, lpath, strerror(e));
    } else if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            rc = reason_printf(err, errlen, -EIO,
                               "%s: database is locked by another process (another arborkv on this "
                               "storage_path?)",
                               path);
        else
            rc = reason_printf(err, errlen, -EIO, "%s: flock: %s", lpath, strerror(errno));
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
            rc = reason_printf(err, errlen, -EINVAL, "storage path is empty");
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
        rc = reason_printf(err, errlen, -EACCES, "%s: permission denied (read-only file)", path);
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
        sqlrc = sqlite3_prepare_v3(st->db, store_stmt_defs[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
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
