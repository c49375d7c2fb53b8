/* SPDX-License-Identifier: MIT */
/*
 * kv: the data operations shared by the command layer, replication, anti-entropy and SYNC: a new
 * local write, a record that came from elsewhere, and the digest of the live data that HASH
 * reports.
 *
 * A local write is what a client write does (replication.md §1): an HLC timestamp, a fresh
 * op_id, an upsert (or a tombstone) in the turn's transaction, and an `op` event handed to
 * replication. conn.c commits the transaction before any reply leaves the process.
 *
 * A record from elsewhere (an event, an anti-entropy repair, a SYNC from a newer remote) is
 * applied by kv_apply_remote only: the clock takes its timestamp, last-write-wins (lww.h) decides
 * against the stored record, and the store writes it with its Merkle update. One function, so the
 * rule that decides which write wins cannot differ between the paths a record can take.
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_KV_H
#define ARBORKV_KV_H

#include <stddef.h>
#include <stdint.h>

#include "arborkv/codec.h"

struct hlc;
struct server;
struct store;
struct store_rec;

#define KV_DIGEST_LEN 32 /* bytes of the HASH digest (BLAKE2b-256) */

/*
 * Writes a value (or a tombstone for CODEC_OP_DEL) as a new local operation: HLC ts (ts == 0:
 * now), fresh op_id, in the turn's transaction, and hands it to replication as an `op` event.
 * Returns 0, or <0 (the store has then marked the turn failed: store.h).
 */
int kv_write(struct server *srv, enum codec_op op, const uint8_t *key, size_t key_len,
             const uint8_t *value, size_t value_len, uint64_t ts);

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

/*
 * The digest of the live data with the given prefix (prefix_len 0: all), as HASH reports it
 * (protocol.md §3, docs/protocol.md): BLAKE2b-256 over len64le(key) key len64le(value) value of
 * each live record, in key order; 32 zero bytes for an empty selection. Returns 0 or -EIO.
 */
int kv_live_digest(struct store *st, const uint8_t *prefix, size_t prefix_len,
                   uint8_t out[KV_DIGEST_LEN]);

#endif
