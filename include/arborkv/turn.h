/* SPDX-License-Identifier: MIT */
/*
 * turn: the end of an event-loop turn's write transaction (group commit).
 *
 * Every write of a turn (client commands, applied events and repairs, purge batches, deletes of
 * acknowledged outbox rows) joins the store's one open transaction (store_begin). A write that
 * fails marks that transaction failed inside the store, the only holder of that state
 * (store.h). The loop's before-sleep hook calls turn_end once the turn's requests have run and
 * before any reply is written:
 *
 *   1. each hook's before(), in slot order, while the transaction has not failed (the outbox:
 *      the turn's events are stored in the same transaction as the writes they describe);
 *   2. COMMIT, or ROLLBACK when the transaction (a write, a BEGIN or a before()) failed;
 *   3. each hook's after(committed), in slot order (the outbox's counters, anti-entropy's held
 *      messages, then the replies: withdrawn and their clients closed when the commit failed).
 *
 * Only after turn_end are the turn's replies written, so nothing is acknowledged that is not
 * durable. The slots are fixed so the order is the same in every build and documented here.
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_TURN_H
#define ARBORKV_TURN_H

#include <stdbool.h>
#include <stdint.h>

struct store;
struct turn;

enum turn_slot {
    TURN_OUTBOX,  /* replication: the turn's events into the outbox, acknowledged rows out */
    TURN_AE,      /* anti-entropy: messages held while they described uncommitted writes */
    TURN_REPLIES, /* connections: the turn's replies withdrawn if the commit failed */
    TURN_SLOTS
};

struct turn_hook {
    int (*before)(void *arg);                 /* NULL, or 0 / <0 to fail the turn */
    void (*after)(void *arg, bool committed); /* NULL, or told how the turn ended */
    void *arg;
};

struct turn_stats {
    uint64_t commits;  /* turns whose writes were committed */
    uint64_t failures; /* turns rolled back because a write, a BEGIN or the COMMIT failed */
};

/* A turn over st ([borrow]: outlives the turn). */
struct turn *turn_new(struct store *st);
void turn_free(struct turn *t); /* NULL-safe */

/* Sets (or, with a hook of NULLs, clears) the hook of slot. */
void turn_set_hook(struct turn *t, enum turn_slot slot, const struct turn_hook *h);

/*
 * Ends the turn as described above. Returns 1 when writes were committed, 0 when the turn wrote
 * nothing (no hook runs), -EIO when it was rolled back (logged).
 */
int turn_end(struct turn *t);

void turn_get_stats(const struct turn *t, struct turn_stats *out);

#endif
