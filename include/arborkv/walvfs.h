/* SPDX-License-Identifier: MIT */
/*
 * walvfs: a SQLite VFS over the default one that writes a transaction's WAL frames with one
 * pwrite instead of two per page.
 *
 * SQLite appends each frame of a commit to the WAL as two writes (24-byte frame header, then the
 * page), so a commit that changed 20 pages makes 40 pwrite calls; on the benchmark machine those
 * syscalls were 20-30% of a node's CPU (docs/benchmarks.md). This VFS keeps the writes to a WAL
 * file in a buffer while they are contiguous and hands them to the real file in one write:
 *
 *   - when the page of a commit frame has been buffered (the frame header's "database size after
 *     commit" field, bytes 4-7, is non-zero only for commit frames; WAL file format, sqlite.org
 *     fileformat2 §4.1), so a commit's xWrite returns the real write's result and SQLite sees an
 *     I/O error exactly where it would have without the buffer;
 *   - before any other operation on the WAL file (read, sync, truncate, size, file control,
 *     close), before a write that is not contiguous with the buffer, and when the buffer would
 *     pass WALVFS_BUFFER_BYTES;
 *   - before the connection publishes a new WAL-index header or releases a lock on the WAL
 *     index (xShmBarrier, xShmLock on the database file). Nothing can read frames before that,
 *     so readers (the checkpointer's connection, other processes) never see a frame that is not
 *     in the file yet. A flush that fails there cannot be reported (xShmBarrier returns nothing):
 *     the WAL file is then marked failed and every later operation on it returns SQLITE_IOERR.
 *
 * Only what reaches the file changes: the same bytes at the same offsets, in the same order,
 * before the same points. Durability is SQLite's (synchronous= decides when the WAL is synced).
 * Files other than WAL files pass straight through.
 *
 * THREADING: the VFS is registered once (thread-safe); each file is used by the thread of the
 * connection that opened it, as SQLite does with SQLITE_OPEN_NOMUTEX connections.
 */
#ifndef ARBORKV_WALVFS_H
#define ARBORKV_WALVFS_H

#define WALVFS_NAME "arborkv-wal"
/* A WAL file's buffer is flushed before it would pass this: the unix VFS writes at most
 * 0x1ffff bytes per call (seekAndWriteFd), so 124 KiB (30 frames of 4 KiB pages) is one pwrite. */
#define WALVFS_BUFFER_BYTES (124 * 1024)

/* Registers the VFS (once; not as the default). Returns 0, or -1 if SQLite refused it. Open a
 * database with it through sqlite3_open_v2(..., WALVFS_NAME). */
int walvfs_register(void);

#endif
