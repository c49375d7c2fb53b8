/* SPDX-License-Identifier: MIT */
/* purge: tombstone purge on a timer; see include/arborkv/purge.h. */
#include "arborkv/purge.h"

#include <stdlib.h>

#include "arborkv/hlc.h"
#include "arborkv/log.h"
#include "arborkv/loop.h"
#include "arborkv/mem.h"
#include "arborkv/store.h"

#define NS_PER_S 1000000000ULL

struct purge {
    struct loop *loop;    /* [borrow] */
    struct store *store;  /* [borrow] */
    uint64_t ttl_ns;      /* 0: disabled */
    uint64_t interval_us; /* between checks */
    uint64_t timer;
    uint64_t purged; /* tombstones deleted since start */
};

uint64_t purge_cutoff_ns(const struct purge *p)
{
    if (!p || !p->ttl_ns) return 0;
    uint64_t now = hlc_wall_ns();
    return now > p->ttl_ns ? now - p->ttl_ns : 0;
}

static void tick(struct loop *l, void *arg)
{
    struct purge *p = arg;
    p->timer = 0;
    uint64_t n = 0;
    uint64_t cutoff = purge_cutoff_ns(p);
    /* The batch joins this turn's transaction, which the group commit ends (conn.c). */
    int rc = cutoff ? store_begin(p->store) : 0;
    if (cutoff && rc == 0) rc = store_purge(p->store, cutoff, PURGE_BATCH, &n);
    if (rc < 0) { /* the store has marked the turn failed: it is rolled back */
        log_error("purge: deleting expired tombstones failed; retrying in %llu s",
                  (unsigned long long) (p->interval_us / 1000000));
        n = 0;
    }
    p->purged += n;
    if (n) log_debug("purge: %llu tombstones older than the TTL deleted", (unsigned long long) n);
    /* A full batch: more may be waiting; go on next turn, after this one's commit. */
    p->timer = loop_add_timer(l, n == PURGE_BATCH ? 0 : p->interval_us, tick, p);
}

int purge_new(struct purge **out, struct loop *l, struct store *st, uint64_t ttl_s)
{
    struct purge *p = xcalloc(1, sizeof(*p));
    p->loop = l;
    p->store = st;
    if (ttl_s > UINT64_MAX / NS_PER_S) ttl_s = UINT64_MAX / NS_PER_S;
    p->ttl_ns = ttl_s * NS_PER_S;
    uint64_t every_s = ttl_s / 4;
    if (every_s < 1) every_s = 1;
    if (every_s > 60) every_s = 60;
    p->interval_us = every_s * 1000000ULL;
    /* The first check soon after start: a node that was down for long purges right away. */
    if (ttl_s) p->timer = loop_add_timer(l, 1000000ULL, tick, p);
    *out = p;
    return 0;
}

void purge_free(struct purge *p)
{
    if (!p) return;
    if (p->timer) loop_cancel_timer(p->loop, p->timer);
    free(p);
}

void purge_info(const struct purge *p, struct buf *b)
{
    buf_add_field(b, "tombstone_ttl_seconds", p ? p->ttl_ns / NS_PER_S : 0);
    buf_add_field(b, "tombstones_purged", p ? p->purged : 0);
    buf_add_field(b, "purge_horizon_ns", p ? store_purge_horizon(p->store) : 0);
}
