/* SPDX-License-Identifier: MIT */
/*
 * checkpoint: the store's WAL checkpointer thread; see include/arborkv/checkpoint.h.
 *
 * Its own file because it is a concern of its own: a thread, a second connection and a protocol
 * with the loop (below), next to store.c's tables and statements, which it never touches. Log
 * lines keep the "store: " prefix: to an operator it is the store's checkpoint that failed.
 */
#include "arborkv/checkpoint.h"
#include "arborkv/buf.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "arborkv/log.h"
#include "arborkv/mem.h"

#define CKPT_START_FRAMES 16384 /* WAL frames (4 KiB pages, 64 MiB) that wake it */
#define CKPT_TAIL_FRAMES  512   /* at most this many left: the loop finishes the job */
#define CKPT_FORCE_FRAMES 65536 /* WAL frames (256 MiB): the loop finishes anyway */

/*
 * CHECKPOINTER
 *
 * A WAL checkpoint copies the WAL's pages into the database file and fsyncs both; on the loop's
 * connection (SQLite's autocheckpoint) it stalled the event loop 80-290 ms every few seconds
 * under load (docs/benchmarks.md). So the loop's connection has autocheckpoint off and a
 * checkpointer thread with its own connection does the work:
 *
 *  1. The loop's commit calls wal_hook() with the WAL's length in frames (pages); past
 *     CKPT_START_FRAMES it wakes the thread (mutex + condvar, no I/O on the loop).
 *  2. The thread runs PASSIVE checkpoints (they never block the loop: no busy handler, no write
 *     lock) until at most CKPT_TAIL_FRAMES remain un-copied. A pass that leaves frames
 *     behind does not fsync the database file in SQLite (only the WAL, before copying), so the
 *     thread fsyncs it itself (xSync on its own file handle), and before handing over it syncs
 *     the WAL again: the loop's final pass then finds almost nothing to sync.
 *  3. A PASSIVE checkpoint cannot restart the WAL while the loop keeps appending to it: SQLite
 *     starts the WAL over only when a write transaction begins with every frame copied. So the
 *     thread leaves the last step to the loop (ckpt.tail_ready): ckpt_maintain(), which the
 *     loop calls through store_maintain() when a turn's replies are out, runs a PASSIVE
 *     checkpoint on the loop's connection, and the next write restarts the WAL. That pass copies
 *     and syncs the last few frames: 1-3 ms in tools/repl_bench instead of the 80-290 ms of a
 *     whole checkpoint.
 *  4. If writes outrun the thread (CKPT_FORCE_FRAMES in the WAL), it hands over anyway,
 *     bounding the WAL file (~256 MiB) at the cost of a longer pause on the loop.
 * Durability is unchanged: commits sync (or not) exactly as before, and checkpoints sync the
 * WAL before copying and the database before the WAL can restart, as SQLite's own do.
 * THREADING: ckpt.lock guards stop/wake; busy and tail_ready are atomics; the thread touches
 * only its own connection (SQLite in multi-thread mode: one connection per thread).
 */

struct ckpt {
    sqlite3 *db;        /* its connection (same file, same synchronous setting) */
    sqlite3_file *file; /* [borrow] db's handle on the database file, for xSync */
    sqlite3 *loop_db;   /* [borrow] the loop's connection: the hook's and ckpt_maintain's */
    int wal_frames;     /* frames in the WAL after the loop's last commit (loop thread only) */
    pthread_t thread;
    bool running;         /* thread started, not joined */
    pthread_mutex_t lock; /* guards stop and wake */
    pthread_cond_t cond;  /* signalled when stop or wake is set */
    bool stop, wake;
    atomic_bool busy;       /* woken and not idle yet */
    atomic_bool tail_ready; /* the last pass left a small tail: ckpt_maintain finishes */
};

static bool ckpt_stopping(struct ckpt *ck)
{
    (void) pthread_mutex_lock(&ck->lock);
    bool stop = ck->stop;
    (void) pthread_mutex_unlock(&ck->lock);
    return stop;
}

/* One wake-up: PASSIVE passes until the rest is the loop's to finish, or no progress. */
static void ckpt_run(struct ckpt *ck)
{
    int prev_done = -1;
    while (!ckpt_stopping(ck)) {
        int nlog = 0, ndone = 0;
        int rc =
                sqlite3_wal_checkpoint_v2(ck->db, "main", SQLITE_CHECKPOINT_PASSIVE, &nlog, &ndone);
        if ((rc & 0xff) == SQLITE_BUSY) return; /* the loop's own pass is running */
        if (rc != SQLITE_OK) {
            log_error("store: checkpoint: %s", sqlite3_errmsg(ck->db));
            return;
        }
        if (nlog <= 0) return;
        /* SQLite syncs the database file only after a complete pass; sync what this one copied
         * now, off the loop, so the loop's final pass has little left to sync. */
        if (ndone > prev_done && ndone > 0 && ndone < nlog) {
            rc = ck->file->pMethods->xSync(ck->file, SQLITE_SYNC_NORMAL);
            if (rc != SQLITE_OK) {
                log_error("store: checkpoint: sync of the database file: %s", sqlite3_errstr(rc));
                return;
            }
        }
        /* The loop takes the last step, even with every frame copied: only a checkpoint
         * between two of its own transactions is sure to see no frame added after it. So it
         * does when the rest is small, when the WAL is too long, or when this pass made no
         * progress (the loop's own open read holds frames back; its pass ends that read). */
        if (nlog - ndone <= CKPT_TAIL_FRAMES || nlog >= CKPT_FORCE_FRAMES || ndone <= prev_done) {
            /* The loop's pass syncs the WAL first: make that sync find (almost) nothing. */
            sqlite3_file *wal = NULL;
            if (sqlite3_file_control(ck->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) ==
                        SQLITE_OK &&
                wal && wal->pMethods) {
                rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
                if (rc != SQLITE_OK)
                    log_error("store: checkpoint: sync of the WAL: %s", sqlite3_errstr(rc));
            }
            atomic_store(&ck->tail_ready, true);
            return;
        }
        prev_done = ndone;
    }
}

static void *ckpt_main(void *arg)
{
    struct ckpt *ck = arg;
    for (;;) {
        (void) pthread_mutex_lock(&ck->lock);
        while (!ck->stop && !ck->wake)
            (void) pthread_cond_wait(&ck->cond, &ck->lock);
        bool stop = ck->stop;
        ck->wake = false;
        (void) pthread_mutex_unlock(&ck->lock);
        if (stop) break;
        ckpt_run(ck);
        atomic_store(&ck->busy, false);
    }
    return NULL;
}

/* After each commit of the loop's connection (it replaces SQLite's autocheckpoint hook). */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int nframes)
{
    struct ckpt *ck = arg;
    (void) db;
    (void) name;
    ck->wal_frames = nframes;
    if (nframes < CKPT_START_FRAMES || atomic_load(&ck->tail_ready) || atomic_load(&ck->busy))
        return SQLITE_OK;
    atomic_store(&ck->busy, true);
    (void) pthread_mutex_lock(&ck->lock);
    ck->wake = true;
    (void) pthread_cond_signal(&ck->cond);
    (void) pthread_mutex_unlock(&ck->lock);
    return SQLITE_OK;
}

void ckpt_stop(struct ckpt *ck)
{
    if (!ck) return;
    if (ck->running) {
        sqlite3_wal_hook(ck->loop_db, NULL, NULL); /* no commit may call into freed memory */
        (void) pthread_mutex_lock(&ck->lock);
        ck->stop = true;
        (void) pthread_cond_signal(&ck->cond);
        (void) pthread_mutex_unlock(&ck->lock);
        int rc = pthread_join(ck->thread, NULL);
        if (rc != 0) log_error("store: checkpointer: join: %s", strerror(rc));
    }
    if (ck->db && sqlite3_close(ck->db) != SQLITE_OK)
        log_error("store: checkpointer: close: %s", sqlite3_errmsg(ck->db));
    (void) pthread_cond_destroy(&ck->cond);
    (void) pthread_mutex_destroy(&ck->lock);
    free(ck);
}

/* ckpt_start's work; on failure ck is left for ckpt_stop to release. */
static int start(struct ckpt *ck, const char *path, bool sync_full, char *err, size_t errlen)
{
    if (!sqlite3_threadsafe())
        return reason_printf(err, errlen, -EIO,
                             "SQLite is built single-threaded (SQLITE_THREADSAFE=0)");
    const char *op = "open";
    int rc = sqlite3_open_v2(path, &ck->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_extended_result_codes(ck->db, 1);
    if (rc == SQLITE_OK) {
        op = "pragmas";
        char sql[128];
        (void) snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s; PRAGMA wal_autocheckpoint = 0;",
                        sync_full ? "FULL" : "NORMAL");
        rc = sqlite3_exec(ck->db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) { /* a first read opens the WAL on this connection */
        op = "read schema";
        rc = sqlite3_exec(ck->db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        op = "file handle";
        rc = sqlite3_file_control(ck->db, "main", SQLITE_FCNTL_FILE_POINTER, &ck->file);
        if (rc == SQLITE_OK && (!ck->file || !ck->file->pMethods)) rc = SQLITE_ERROR;
    }
    if (rc != SQLITE_OK)
        return reason_printf(err, errlen, -EIO, "%s: checkpointer connection: %s: %s", path, op,
                             ck->db ? sqlite3_errmsg(ck->db) : sqlite3_errstr(rc));
    /* Signals stay with the main thread (main.c blocks and reads them through a signalfd). */
    sigset_t all, old;
    (void) sigfillset(&all);
    (void) pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&ck->thread, NULL, ckpt_main, ck);
    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return reason_printf(err, errlen, -EIO, "cannot start the checkpointer thread: %s",
                             strerror(rc));
    ck->running = true;
    sqlite3_wal_hook(ck->loop_db, wal_hook, ck);
    return 0;
}

int ckpt_start(struct ckpt **out, sqlite3 *db, const char *path, bool sync_full, char *err,
               size_t errlen)
{
    struct ckpt *ck = xcalloc(1, sizeof(*ck));
    (void) pthread_mutex_init(&ck->lock, NULL);
    (void) pthread_cond_init(&ck->cond, NULL);
    ck->loop_db = db;
    int rc = start(ck, path, sync_full, err, errlen);
    if (rc < 0) {
        ckpt_stop(ck);
        ck = NULL;
    }
    *out = ck;
    return rc;
}

bool ckpt_tail_ready(const struct ckpt *ck)
{
    return atomic_load(&ck->tail_ready);
}

void ckpt_maintain(struct ckpt *ck)
{
    if (!atomic_exchange(&ck->tail_ready, false)) return;
    int nlog = 0, ndone = 0;
    int rc = sqlite3_wal_checkpoint_v2(ck->loop_db, "main", SQLITE_CHECKPOINT_PASSIVE, &nlog,
                                       &ndone);
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY)
        log_error("store: checkpoint: %s", sqlite3_errmsg(ck->loop_db));
}

uint64_t ckpt_wal_frames(const struct ckpt *ck)
{
    return ck->wal_frames > 0 ? (uint64_t) ck->wal_frames : 0;
}
