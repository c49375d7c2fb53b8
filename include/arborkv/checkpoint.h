/* SPDX-License-Identifier: MIT */
/*
 * checkpoint: the store's WAL checkpointer, a thread with a SQLite connection of its own that
 * copies the WAL back into the database file, so that the event loop's commits never stall on
 * a checkpoint (the whole design, and why each step is where it is: src/checkpoint.c,
 * CHECKPOINTER).
 *
 * A helper of the store, used by store.c only: it is handed the loop's connection, on which it
 * installs its after-commit hook and runs the short last step of each checkpoint. The file must
 * be in WAL mode with wal_autocheckpoint = 0 on the loop's connection (the store's pragmas).
 *
 * THREADING: ckpt_start, ckpt_stop, ckpt_tail_ready, ckpt_maintain and ckpt_wal_frames run on
 * the thread that owns the loop's connection (the event loop); the hook runs there too, inside
 * its commits. The checkpointer thread touches only its own connection.
 */
#ifndef ARBORKV_CHECKPOINT_H
#define ARBORKV_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sqlite3; /* <sqlite3.h>: typedef struct sqlite3 sqlite3 */
struct ckpt;

/*
 * Opens the checkpointer's connection on the database file at path, with synchronous=FULL when
 * sync_full (else NORMAL: the same setting as db, so checkpoints sync as SQLite's own would),
 * starts its thread and installs the after-commit hook on db, the loop's connection to the same
 * file. Returns 0 with *out set (**new**, release with ckpt_stop()), or -EIO with a reason in
 * err (errlen bytes, NUL-terminated) and *out NULL.
 */
int ckpt_start(struct ckpt **out, struct sqlite3 *db, const char *path, bool sync_full, char *err,
               size_t errlen);

/* Stops and joins the thread and closes its connection. Call it before closing db. NULL-safe. */
void ckpt_stop(struct ckpt *ck);

/*
 * Whether the thread has left the last step of a checkpoint to the loop. Then ckpt_maintain()
 * runs it on the loop's connection; the caller first ends whatever read holds db's snapshot
 * (it would hold the last frames back). Cheap: one atomic load.
 */
bool ckpt_tail_ready(const struct ckpt *ck);

/*
 * The loop's step: a PASSIVE checkpoint on db that copies and syncs the last few frames, after
 * which the next write starts the WAL over. Call it when no transaction is open on db and no
 * client waits on this turn. A no-op unless ckpt_tail_ready(); failures are logged.
 */
void ckpt_maintain(struct ckpt *ck);

/* Frames (pages) in the WAL after db's last commit, as the hook saw them; 0 before any. */
uint64_t ckpt_wal_frames(const struct ckpt *ck);

#endif
