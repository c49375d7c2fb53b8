/* SPDX-License-Identifier: MIT */
/*
 * kv_apply: the one way a record from elsewhere enters the store.
 *
 * A record from elsewhere (an event, an anti-entropy repair, a SYNC from a newer remote) is
 * applied by kv_apply_remote only: the clock takes its timestamp, last-write-wins (lww.h) decides
 * against the stored record, and the store writes it with its Merkle update. One function, so the
 * rule that decides which write wins cannot differ between the paths a record can take.
 *
 * It depends on the clock, the LWW order and the store only, so replication, anti-entropy and
 * SYNC can all use it without depending on each other or on the local write path (kv.h).
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_KV_APPLY_H
#define ARBORKV_KV_APPLY_H

struct hlc;
struct store;
struct store_rec;

enum kv_apply_result {
    KV_APPLIED = 1, /* stored: it beats the stored record (or none was stored) */
    KV_SAME = 2,    /* the stored record is this one */
    KV_OLDER = 3,   /* the stored record beats it: nothing written */
    KV_PURGED = 4,  /* refused: see below */
};

/*
 * Applies a record received from a peer or a remote (an event, a repair, SYNC): advances the
 * clock past in->ts (hlc_recv, bounded by its skew guard) and stores the record iff it beats the
 * stored one, in the turn's transaction (opened if needed; the turn commits it). Returns
 * KV_APPLIED, KV_SAME, KV_OLDER, KV_PURGED (no record is stored for the key and in->ts is not
 * above the store's purge horizon: a tombstone that beat it may have been purged here, so it is
 * refused; docs/anti-entropy.md), or -EIO (the store has marked the turn failed).
 */
int kv_apply_remote(struct hlc *clock, struct store *st, const struct store_rec *in);

#endif
