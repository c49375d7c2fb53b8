/* SPDX-License-Identifier: MIT */
/* turn: the end of an event-loop turn's write transaction; see include/arborkv/turn.h. */
#include "arborkv/turn.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "arborkv/log.h"
#include "arborkv/mem.h"
#include "arborkv/store.h"

struct turn {
    struct store *st;
    struct turn_hook hooks[TURN_SLOTS];
    struct turn_stats stats;
    bool ending; /* inside turn_end: a hook must not end the turn again */
};

struct turn *turn_new(struct store *st)
{
    assert(st);
    struct turn *t = xcalloc(1, sizeof(*t));
    t->st = st;
    return t;
}

void turn_free(struct turn *t)
{
    free(t);
}

void turn_set_hook(struct turn *t, enum turn_slot slot, const struct turn_hook *h)
{
    assert(t && slot < TURN_SLOTS && h);
    t->hooks[slot] = *h;
}

int turn_end(struct turn *t)
{
    assert(t && !t->ending);
    struct store *st = t->st;
    if (!store_in_txn(st) && !store_txn_failed(st)) return 0;
    t->ending = true;
    bool ok = !store_txn_failed(st);
    for (int i = 0; i < TURN_SLOTS && ok; i++)
        if (t->hooks[i].before && t->hooks[i].before(t->hooks[i].arg) < 0) ok = false;
    int rc = -EIO;
    if (ok)
        rc = store_commit(st); /* rolls back itself if a write failed meanwhile */
    else
        store_rollback(st);
    assert(!store_in_txn(st) && !store_txn_failed(st));
    for (int i = 0; i < TURN_SLOTS; i++)
        if (t->hooks[i].after) t->hooks[i].after(t->hooks[i].arg, rc == 0);
    t->ending = false;
    if (rc == 0) {
        t->stats.commits++;
        return 1;
    }
    t->stats.failures++;
    log_error("commit failed: replies of this turn are withdrawn and their clients disconnected");
    return -EIO;
}

void turn_get_stats(const struct turn *t, struct turn_stats *out)
{
    *out = t->stats;
}
