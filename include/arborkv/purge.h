/* SPDX-License-Identifier: MIT */
/*
 * purge: removes tombstones older than tombstone_ttl (replication.md §1; the rule and its
 * trade-off are in docs/anti-entropy.md, "Tombstone purge").
 *
 * Every check interval (ttl / 4, between 1 s and 60 s) it deletes the tombstones whose ts is more
 * than ttl behind this node's wall clock, PURGE_BATCH per loop turn (each batch is part of that
 * turn's group commit), and the store raises its purge horizon. kv_apply_remote then refuses
 * records at or below the horizon for keys the store holds nothing for, and anti-entropy asks the
 * peer that sent such a record to drop it, so a purged delete never comes back.
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_PURGE_H
#define ARBORKV_PURGE_H

#include <stdint.h>

#include "arborkv/buf.h"

#define PURGE_BATCH 1000 /* tombstones deleted per loop turn at most */

struct loop;
struct store;
struct purge;

/* ttl_s = 0 disables purging (tombstones are kept for ever). Returns 0 with *out set (**new**,
 * release with purge_free()). */
int purge_new(struct purge **out, struct loop *l, struct store *st, uint64_t ttl_s);
void purge_free(struct purge *p); /* NULL-safe */

/* The cutoff: records with ts below it are past the TTL by this node's clock; 0 when disabled. */
uint64_t purge_cutoff_ns(const struct purge *p);

/* INFO lines: tombstone_ttl_seconds, tombstones_purged, purge_horizon_ns. NULL-safe. */
void purge_info(const struct purge *p, struct buf *b);

#endif
