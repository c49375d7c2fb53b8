/* SPDX-License-Identifier: MIT */
/*
 * store: the records table in SQLite (replication.md §1). The only module that sees SQL or
 * SQLITE_* codes: failures are logged once with sqlite3_errmsg() and the operation, and returned
 * as -EIO (or -EBADMSG / -ENOTSUP / -EACCES where noted).
 *
 * A record is (key, value | tombstone, ts, op_id). Tombstones are stored rows with no value; every
 * "live" accessor skips them. Writes happen inside an explicit transaction opened with
 * store_begin() and ended with store_commit() or store_rollback(): the event loop opens one per
 * turn on the first write and commits it before any reply leaves the process (group commit).
 *
 * THREADING: single-threaded; the event-loop thread owns the store. (For the file engine the
 * store runs a checkpointer thread of its own, invisible to callers: see store_maintain.)
 */
#ifndef ARBORKV_STORE_H
#define ARBORKV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/record.h"

struct store;

enum store_engine {
    STORE_ENGINE_SQLITE = 0, /* file <dir>/arborkv.db, WAL mode */
    STORE_ENGINE_MEMORY = 1, /* SQLite in-memory database, empty at each start */
};

enum store_durability {
    STORE_DURABLE_PROCESS = 0, /* synchronous=NORMAL: survives kill -9 (fsync = "normal") */
    STORE_DURABLE_POWER = 1,   /* synchronous=FULL: also survives power loss (fsync = "always") */
};

/*
 * Opens (creating if needed) the store. For STORE_ENGINE_SQLITE, dir is created (with parents)
 * when missing and the database is <dir>/arborkv.db; dir is ignored for the memory engine.
 * An existing file that is not a SQLite database, is corrupt, or holds a different schema is
 * refused, never overwritten. Returns 0 with *out set (**new**, release with store_close()), or
 * a negative errno with a human-readable reason in err (errlen bytes, NUL-terminated).
 */
int store_open(struct store **out, enum store_engine engine, const char *dir,
               enum store_durability durability, char *err, size_t errlen);

/* Rolls back any open transaction, finalizes statements, closes the database. NULL-safe. */
void store_close(struct store *st);

/*
 * Background upkeep that must run on the owning thread: finishes a WAL checkpoint that the
 * checkpointer thread prepared (src/checkpoint.c, CHECKPOINTER), which lets the next write start
 * the WAL file over. Cheap when there is nothing to do; a few ms of I/O when there is. Call it when
 * no transaction is open and no client waits on this turn (the loop: after the replies are
 * flushed). NULL-safe; a no-op for the memory engine.
 */
void store_maintain(struct store *st);
/* Frames (pages) in the WAL after the last commit; 0 for the memory engine or before any. */
uint64_t store_wal_frames(const struct store *st);

/*
 * The transaction's failed state lives here and nowhere else: a write that fails (and a BEGIN
 * that fails) marks it, later writes of the transaction are refused with -EIO, and the commit
 * rolls back and returns -EIO. Callers only pass the -EIO on; the turn (turn.h) reads the state
 * through store_commit. So no error of a turn's write can be lost on the way to its commit.
 */
/* Opens a write transaction (BEGIN IMMEDIATE) unless one is open. Returns 0 or -EIO (failed). */
int store_begin(struct store *st);
/* Commits the open transaction. Returns 0 (also without one), or -EIO when the transaction (or
 * its BEGIN) failed or COMMIT failed: then it is rolled back and the failed state cleared. */
int store_commit(struct store *st);
/* Rolls back the open transaction (no-op without one); restores the live-key count and clears
 * the failed state. */
void store_rollback(struct store *st);
bool store_in_txn(const struct store *st);
/* Whether the transaction of this turn has failed (see above); cleared by commit and rollback. */
bool store_txn_failed(const struct store *st);

/*
 * The reads of a loop turn (store_get, store_get_rec, store_scan, store_outbox_next, the probe of
 * store_put_if) share one SQLite read transaction, which the first of them opens and which
 * store_begin turns into the write transaction. store_end_read ends it when no write did:
 * the loop calls it once per turn, before store_maintain (and before sleeping, so the reads of
 * the next turn see everything). NULL-safe; no-op when none is open.
 */
void store_end_read(struct store *st);

/*
 * Looks up the live value of key. Returns 1 with *value and *value_len set ([borrow], valid until
 * the next call into the store), 0 when absent or a tombstone, -EIO on failure.
 */
int store_get(struct store *st, const uint8_t *key, size_t key_len, const uint8_t **value,
              size_t *value_len);

/*
 * Looks up the record for key, tombstones included. Returns 1 with *rec filled ([borrow]
 * pointers), 0 when there is no record, -EIO on failure.
 */
int store_get_rec(struct store *st, const uint8_t *key, size_t key_len, struct store_rec *rec);

/*
 * Writes rec (insert or replace, unconditionally: LWW decisions are the caller's). Caller holds
 * an open transaction (store_begin). rec->tombstone selects a delete marker (value ignored).
 * Returns 0 or -EIO.
 */
int store_put(struct store *st, const struct store_rec *rec);

/* Condition of store_put_if: cur is the stored record for rec's key ([borrow], NULL when there
 * is none). Returns 0 to write rec, or a positive value to leave the key as it is. */
typedef int store_cond_fn(void *arg, const struct store_rec *cur, const struct store_rec *rec);

/*
 * store_put unless cond says no, with one lookup of the key for both (the write that follows
 * finds its pages in the cache). Opens a transaction, if none is open, only when it writes.
 * Returns 0 when written, cond's positive value when not, or -EIO.
 */
int store_put_if(struct store *st, const struct store_rec *rec, store_cond_fn *cond, void *arg);

/*
 * store_put for a new local write: the record is written with ts raised, if needed, to one more
 * than the ts of the record it replaces, and rec->ts is updated to the ts written. So a write
 * always supersedes the version this node holds, even when that version came from a peer whose
 * clock runs ahead beyond the HLC's skew guard (the causally later write wins).
 */
int store_put_local(struct store *st, struct store_rec *rec);

/* Callback for store_scan: return 0 to go on, anything else to stop (store_scan returns it). */
typedef int store_scan_fn(void *arg, const struct store_rec *rec);

enum store_scan_flags {
    STORE_SCAN_LIVE = 1 << 0,      /* skip tombstones */
    STORE_SCAN_KEYS_ONLY = 1 << 1, /* rec->value is NULL (not read), value_len 0 */
};

/*
 * Calls fn for every record whose key starts with prefix (prefix_len 0 = all), in ascending
 * byte order of keys, starting strictly after `after` when after != NULL (for paging).
 * fn must not call into the store. Returns 0 when done, fn's non-zero return when it stopped
 * early, or -EIO.
 */
int store_scan(struct store *st, const uint8_t *prefix, size_t prefix_len, const uint8_t *after,
               size_t after_len, unsigned flags, store_scan_fn *fn, void *arg);

/*
 * Tombstone purge (docs/anti-entropy.md, "Tombstone purge"). Both need an open transaction and
 * keep the tree in step (rollback included).
 *
 * store_purge deletes up to limit tombstones with ts < before, oldest first, sets *purged to the
 * number deleted, and raises the purge horizon to the largest ts deleted. Returns 0 or -EIO.
 *
 * store_drop deletes the record of rec->key iff the stored one is exactly rec's version (same
 * ts, op_id and tombstone flag; the value is not compared) and raises the horizon to its ts; no
 * tombstone is left. Returns 1 dropped, 0 when the stored record is another version or there is
 * none, or -EIO.
 *
 * store_purge_horizon: the largest ts of a record purged or dropped here, ever (persisted; 0 when
 * none). A record with ts <= horizon for a key this store holds nothing for may be one whose
 * tombstone was purged: kv_apply_remote refuses it.
 */
int store_purge(struct store *st, uint64_t before, size_t limit, uint64_t *purged);
int store_drop(struct store *st, const struct store_rec *rec);
uint64_t store_purge_horizon(const struct store *st);

/* Number of live (non-tombstone) keys; kept in memory, O(1). */
uint64_t store_live_count(const struct store *st);
/* Largest ts of any record at open time (for the HLC across restarts); 0 for an empty store. */
uint64_t store_max_ts_at_open(const struct store *st);
/*
 * Replication outbox (schema version 2): event messages waiting for the broker's acknowledgement.
 * store_outbox_add and store_outbox_delete need an open transaction (store_begin); a failure
 * marks it failed. store_outbox_add sets *id (ids only grow, never reused). store_outbox_delete
 * returns 1 deleted, 0 no such row, or -EIO. store_outbox_next finds the oldest message with
 * id > after: 1 with the fields set (payload [borrow] until the next call into the store), 0 when
 * none, or -EIO.
 */
int store_outbox_add(struct store *st, const uint8_t *payload, size_t len, uint32_t nevents,
                     uint64_t *id);
int store_outbox_delete(struct store *st, uint64_t id);
int store_outbox_next(struct store *st, uint64_t after, uint64_t *id, uint32_t *nevents,
                      const uint8_t **payload, size_t *len);
/* Messages and events in the outbox when the store was opened. */
void store_outbox_counts_at_open(const struct store *st, uint64_t *rows, uint64_t *events);

/*
 * Merkle tree (merkle.h). store_attach_tree adds every stored record to m (which must be empty)
 * and from then on keeps m in step with every write, rollbacks included. Returns 0 or -EIO. m is
 * [borrow] and must outlive the store.
 */
struct merkle;
int store_attach_tree(struct store *st, struct merkle *m);

/* "sqlite" or "memory". */
const char *store_engine_name(const struct store *st);

#endif
