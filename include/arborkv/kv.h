/* SPDX-License-Identifier: MIT */
/*
 * kv: the local data operations shared by the command layer and SYNC (mirror.c): a new local
 * write, and the digest of the live data that HASH reports. A record from elsewhere is applied by
 * kv_apply.h.
 *
 * A local write is what a client write does (replication.md §1): an HLC timestamp, a fresh
 * op_id, an upsert (or a tombstone) in the turn's transaction, and an `op` event handed to
 * replication. conn.c commits the transaction before any reply leaves the process.
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_KV_H
#define ARBORKV_KV_H

#include <stddef.h>
#include <stdint.h>

#include "arborkv/codec.h"

struct hlc;
struct opid_pool;
struct repl;
struct store;

/* The handles a local write needs ([borrow]); the wiring (node.c) fills it once. */
struct kv {
    struct store *store;
    struct hlc *hlc;         /* the node's clock: timestamps of local writes */
    struct opid_pool *opids; /* op_ids of local writes */
    struct repl *repl;       /* NULL: replication not built */
};

#define KV_DIGEST_LEN 32 /* bytes of the HASH digest (BLAKE2b-256) */

/*
 * Writes a value (or a tombstone for CODEC_OP_DEL) as a new local operation: HLC ts (ts == 0:
 * now), fresh op_id, in the turn's transaction, and hands it to replication as an `op` event.
 * Returns 0, or <0 (the store has then marked the turn failed: store.h).
 */
int kv_write(const struct kv *kv, enum codec_op op, const uint8_t *key, size_t key_len,
             const uint8_t *value, size_t value_len, uint64_t ts);

/*
 * The digest of the live data with the given prefix (prefix_len 0: all), as HASH reports it
 * (protocol.md §3, docs/protocol.md): BLAKE2b-256 over len64le(key) key len64le(value) value of
 * each live record, in key order; 32 zero bytes for an empty selection. Returns 0 or -EIO.
 */
int kv_live_digest(struct store *st, const uint8_t *prefix, size_t prefix_len,
                   uint8_t out[KV_DIGEST_LEN]);

#endif
