/* SPDX-License-Identifier: MIT */
/*
 * walvfs: one write per WAL commit instead of two per page; see include/arborkv/walvfs.h.
 *
 * Each open file is a struct wfile followed by the default VFS's own file object (real), to
 * which every method forwards. Database files are kept in a list so that a WAL file, at open,
 * finds its database file (sqlite3_filename_database() gives back the very name pointer SQLite
 * passed when it opened the database): the database file's xShmBarrier / xShmLock then flush
 * the WAL file's buffer. A WAL file whose database file is not found is not buffered.
 */
#include "arborkv/walvfs.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "arborkv/log.h"
#include "arborkv/mem.h"

#define FRAME_HEADER_BYTES 24 /* WAL frame header; bytes 4-7: db size after a commit, else 0 */

struct wfile {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file object, right after this struct */
    const char *name;   /* database files: SQLite's name pointer (identity, not compared) */
    struct wfile *next; /* database files: the list of open ones */
    struct wfile *wal;  /* database files: its open WAL file, if buffered */
    struct wfile *db;   /* WAL files: the database file (NULL: not buffered) */
    uint8_t *buf;       /* WAL files: writes not passed on yet, for file offset off.. */
    size_t len, cap;
    sqlite3_int64 off;
    bool flush_next; /* the last write was a commit frame's header: flush after its page */
    int failed;      /* a flush failed where it could not be reported: every call fails */
};

static sqlite3_vfs vfs;
static sqlite3_vfs *root;
static pthread_mutex_t dbs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct wfile *dbs;

/* Passes the buffer to the real file. On failure the buffer is dropped: SQLite rolls back the
 * transaction whose frames it held, as after a failed write of its own. */
static int flush(struct wfile *w)
{
    if (w->failed) return w->failed;
    if (w->len == 0) return SQLITE_OK;
    int rc = w->real->pMethods->xWrite(w->real, w->buf, (int) w->len, w->off);
    w->len = 0;
    w->flush_next = false;
    return rc;
}

/* A flush before the WAL index moves on (xShmBarrier, xShmLock), which cannot report a failure:
 * the WAL file is marked failed instead. */
static void flush_wal_of(struct wfile *db)
{
    struct wfile *w = db->wal;
    if (!w || w->failed || w->len == 0) return;
    int rc = flush(w);
    if (rc != SQLITE_OK) {
        w->failed = rc;
        log_error("store: WAL write failed (SQLite code %d); the database is unusable until "
                  "restarted",
                  rc);
    }
}

/* ---- io methods ----------------------------------------------------------------------------- */

static int x_close(sqlite3_file *f)
{
    struct wfile *w = (struct wfile *) f;
    int rc = flush(w);
    if (w->db) w->db->wal = NULL;
    if (w->wal) w->wal->db = NULL;
    if (w->name) {
        (void) pthread_mutex_lock(&dbs_lock);
        for (struct wfile **p = &dbs; *p; p = &(*p)->next)
            if (*p == w) {
                *p = w->next;
                break;
            }
        (void) pthread_mutex_unlock(&dbs_lock);
    }
    free(w->buf);
    w->buf = NULL;
    int crc = w->real->pMethods->xClose(w->real);
    return rc != SQLITE_OK ? rc : crc;
}

static int x_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    struct wfile *w = (struct wfile *) f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xRead(w->real, p, n, off);
}

static int x_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    struct wfile *w = (struct wfile *) f;
    if (!w->db) return w->real->pMethods->xWrite(w->real, p, n, off);
    if (w->failed) return w->failed;
    size_t un = (size_t) n;
    int rc = SQLITE_OK;
    if (w->len && (off != w->off + (sqlite3_int64) w->len || w->len + un > WALVFS_BUFFER_BYTES))
        rc = flush(w);
    if (rc != SQLITE_OK) return rc;
    if (un > WALVFS_BUFFER_BYTES) return w->real->pMethods->xWrite(w->real, p, n, off);
    if (w->len + un > w->cap) {
        w->buf = xrealloc(w->buf, WALVFS_BUFFER_BYTES);
        w->cap = WALVFS_BUFFER_BYTES;
    }
    if (w->len == 0) w->off = off;
    memcpy(w->buf + w->len, p, un);
    w->len += un;
    if (w->flush_next) return flush(w); /* the page of a commit frame: the commit is written */
    const uint8_t *b = p;
    w->flush_next = n == FRAME_HEADER_BYTES && (b[4] | b[5] | b[6] | b[7]) != 0;
    return SQLITE_OK;
}

static int x_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct wfile *w = (struct wfile *) f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xTruncate(w->real, size);
}

static int x_sync(sqlite3_file *f, int flags)
{
    struct wfile *w = (struct wfile *) f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xSync(w->real, flags);
}

static int x_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    struct wfile *w = (struct wfile *) f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xFileSize(w->real, size);
}

static int x_lock(sqlite3_file *f, int level)
{
    struct wfile *w = (struct wfile *) f;
    return w->real->pMethods->xLock(w->real, level);
}

static int x_unlock(sqlite3_file *f, int level)
{
    struct wfile *w = (struct wfile *) f;
    return w->real->pMethods->xUnlock(w->real, level);
}

static int x_check_reserved_lock(sqlite3_file *f, int *out)
{
    struct wfile *w = (struct wfile *) f;
    return w->real->pMethods->xCheckReservedLock(w->real, out);
}

static int x_file_control(sqlite3_file *f, int op, void *arg)
{
    struct wfile *w = (struct wfile *) f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xFileControl(w->real, op, arg);
}

static int x_sector_size(sqlite3_file *f)
{
    struct wfile *w = (struct wfile *) f;
    return w->real->pMethods->xSectorSize(w->real);
}

static int x_device_characteristics(sqlite3_file *f)
{
    struct wfile *w = (struct wfile *) f;
    return w->real->pMethods->xDeviceCharacteristics(w->real);
}

static int x_shm_map(sqlite3_file *f, int page, int size, int extend, void volatile **p)
{
    struct wfile *w = (struct wfile *) f;
    return w->real->pMethods->xShmMap(w->real, page, size, extend, p);
}

static int x_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    struct wfile *w = (struct wfile *) f;
    if (flags & SQLITE_SHM_UNLOCK) flush_wal_of(w);
    return w->real->pMethods->xShmLock(w->real, offset, n, flags);
}

static void x_shm_barrier(sqlite3_file *f)
{
    struct wfile *w = (struct wfile *) f;
    flush_wal_of(w);
    w->real->pMethods->xShmBarrier(w->real);
}

static int x_shm_unmap(sqlite3_file *f, int delete_flag)
{
    struct wfile *w = (struct wfile *) f;
    return w->real->pMethods->xShmUnmap(w->real, delete_flag);
}

static int x_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    struct wfile *w = (struct wfile *) f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xFetch(w->real, off, n, pp);
}

static int x_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    struct wfile *w = (struct wfile *) f;
    return w->real->pMethods->xUnfetch(w->real, off, p);
}

static const sqlite3_io_methods methods = {
    .iVersion = 3,
    .xClose = x_close,
    .xRead = x_read,
    .xWrite = x_write,
    .xTruncate = x_truncate,
    .xSync = x_sync,
    .xFileSize = x_file_size,
    .xLock = x_lock,
    .xUnlock = x_unlock,
    .xCheckReservedLock = x_check_reserved_lock,
    .xFileControl = x_file_control,
    .xSectorSize = x_sector_size,
    .xDeviceCharacteristics = x_device_characteristics,
    .xShmMap = x_shm_map,
    .xShmLock = x_shm_lock,
    .xShmBarrier = x_shm_barrier,
    .xShmUnmap = x_shm_unmap,
    .xFetch = x_fetch,
    .xUnfetch = x_unfetch,
};

/* ---- vfs methods ---------------------------------------------------------------------------- */

static int x_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags)
{
    (void) v;
    struct wfile *w = (struct wfile *) f;
    memset(w, 0, sizeof(*w));
    w->real = (sqlite3_file *) (w + 1);
    int rc = root->xOpen(root, name, w->real, flags, out_flags);
    if (!w->real->pMethods) return rc == SQLITE_OK ? SQLITE_CANTOPEN : rc; /* nothing to close */
    int version = w->real->pMethods->iVersion;
    if (version < 3) {
        (void) w->real->pMethods->xClose(w->real);
        log_error("store: the default SQLite VFS has io methods version %d (3 needed)", version);
        return SQLITE_CANTOPEN;
    }
    w->base.pMethods = &methods;
    if (rc != SQLITE_OK || !name) return rc;
    if (flags & SQLITE_OPEN_MAIN_DB) {
        w->name = name;
        (void) pthread_mutex_lock(&dbs_lock);
        w->next = dbs;
        dbs = w;
        (void) pthread_mutex_unlock(&dbs_lock);
    } else if (flags & SQLITE_OPEN_WAL) {
        const char *dbname = sqlite3_filename_database(name);
        (void) pthread_mutex_lock(&dbs_lock);
        for (struct wfile *d = dbs; d; d = d->next)
            if (d->name == dbname && !d->wal) {
                d->wal = w;
                w->db = d;
                break;
            }
        (void) pthread_mutex_unlock(&dbs_lock);
    }
    return SQLITE_OK;
}

static int x_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    (void) v;
    return root->xDelete(root, name, sync_dir);
}

static int x_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void) v;
    return root->xAccess(root, name, flags, out);
}

static int x_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void) v;
    return root->xFullPathname(root, name, n, out);
}

static void *x_dl_open(sqlite3_vfs *v, const char *name)
{
    (void) v;
    return root->xDlOpen(root, name);
}

static void x_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    (void) v;
    root->xDlError(root, n, msg);
}

static void (*x_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void) v;
    return root->xDlSym(root, h, sym);
}

static void x_dl_close(sqlite3_vfs *v, void *h)
{
    (void) v;
    root->xDlClose(root, h);
}

static int x_randomness(sqlite3_vfs *v, int n, char *out)
{
    (void) v;
    return root->xRandomness(root, n, out);
}

static int x_sleep(sqlite3_vfs *v, int us)
{
    (void) v;
    return root->xSleep(root, us);
}

static int x_current_time(sqlite3_vfs *v, double *out)
{
    (void) v;
    return root->xCurrentTime(root, out);
}

static int x_get_last_error(sqlite3_vfs *v, int n, char *out)
{
    (void) v;
    return root->xGetLastError(root, n, out);
}

static int x_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void) v;
    return root->xCurrentTimeInt64(root, out);
}

static int registered = -1;

static void register_once(void)
{
    root = sqlite3_vfs_find(NULL);
    if (!root || root->iVersion < 2) {
        log_error("store: no usable default SQLite VFS");
        return;
    }
    vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int) sizeof(struct wfile) + root->szOsFile,
        .mxPathname = root->mxPathname,
        .zName = WALVFS_NAME,
        .xOpen = x_open,
        .xDelete = x_delete,
        .xAccess = x_access,
        .xFullPathname = x_full_pathname,
        .xDlOpen = x_dl_open,
        .xDlError = x_dl_error,
        .xDlSym = x_dl_sym,
        .xDlClose = x_dl_close,
        .xRandomness = x_randomness,
        .xSleep = x_sleep,
        .xCurrentTime = x_current_time,
        .xGetLastError = x_get_last_error,
        .xCurrentTimeInt64 = x_current_time_int64,
    };
    int rc = sqlite3_vfs_register(&vfs, 0);
    if (rc != SQLITE_OK) {
        log_error("store: cannot register the %s VFS: %s", WALVFS_NAME, sqlite3_errstr(rc));
        return;
    }
    registered = 0;
}

int walvfs_register(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void) pthread_once(&once, register_once);
    return registered;
}
