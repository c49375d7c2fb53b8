/* SPDX-License-Identifier: MIT */
/*
 * merkle: the in-memory Merkle tree over all records, tombstones included (replication.md §4).
 *
 * Shape: fan-out F (2..256, power of two) and depth D (1..8 levels of inner nodes above the
 * leaves), F^D leaf buckets (default 16 x 4 = 65,536), at most 2^24 leaves. Every key has a
 * 32-bit key hash, merkle_key_hash(key): the first 4 bytes, big-endian, of SipHash-2-4 (libsodium
 * crypto_shorthash) of the key under an all-zero key. Its top log2(F^D) bits are the key's leaf
 * bucket, so a bucket is a contiguous range of key hashes (the store keeps the hash in an index
 * and lists a bucket's records with one range query), buckets are spread evenly, and a bucket's
 * path from the root is its base-F digits, most significant first. The key hash does not depend
 * on the tree's shape.
 *
 * Digests (all BLAKE2b-256, libsodium's crypto_generichash):
 *   record digest  = H("arborkv-rec-v1" | u64le(key_len) | key | u8(tombstone) |
 *                      u64le(value_len) | value | u64le(ts) | op_id[16])   (value empty for a
 *                      tombstone)
 *   leaf digest    = the sum modulo 2^256 of its records' digests (as 256-bit little-endian
 *                    integers); 32 zero bytes for an empty leaf. A sum is order-independent and
 *                    lets a write replace one record's contribution in O(1) (subtract the old
 *                    digest, add the new one), without reading the bucket's other records.
 *   inner digest   = H("arborkv-node-v1" | the F child digests), or 32 zero bytes when every
 *                    child is zero (an empty subtree).
 *   root           = the digest of the top inner node.
 * Two trees holding the same records therefore have bit-identical digests, whatever order the
 * records were added in.
 *
 * Updates are O(1) on the leaf plus O(D) to mark the path dirty; dirty inner nodes are rehashed
 * lazily, at most once each, when a digest above them is read (merkle_root, merkle_node). So a
 * burst of writes costs one rehash of the touched paths, not one per write.
 *
 * The tree also counts records per leaf (for paging a bucket's records in anti-entropy) and in
 * total. Memory: (F^D + inner nodes) x 32 bytes + 4 bytes per leaf: ~2.4 MiB at 16 x 4.
 *
 * THREADING: single-threaded (the event-loop thread owns it).
 */
#ifndef ARBORKV_MERKLE_H
#define ARBORKV_MERKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/record.h"

#define MERKLE_DIGEST_LEN     32
#define MERKLE_DEFAULT_FANOUT 16
#define MERKLE_DEFAULT_DEPTH  4
#define MERKLE_MAX_LEAVES     (1u << 24)

struct merkle;

/* Returns 0 with *out (**new**, free with merkle_free), or -EINVAL for an unsupported shape. */
int merkle_new(struct merkle **out, unsigned fanout, unsigned depth);
void merkle_free(struct merkle *m); /* NULL-safe */

unsigned merkle_fanout(const struct merkle *m);
unsigned merkle_depth(const struct merkle *m);
uint32_t merkle_leaves(const struct merkle *m); /* F^D */

/* The shape-independent 32-bit key hash (see above). */
uint32_t merkle_key_hash(const uint8_t *key, size_t key_len);

/* The leaf bucket of a key hash, and the inclusive range of key hashes of a leaf bucket. */
uint32_t merkle_bucket_of(const struct merkle *m, uint32_t key_hash);
void merkle_bucket_range(const struct merkle *m, uint32_t leaf, uint32_t *lo, uint32_t *hi);

/* Writes the record digest of rec to out. */
void merkle_record_digest(const struct store_rec *rec, uint8_t out[MERKLE_DIGEST_LEN]);

/*
 * Accounts a change of one key's record: old is the record it replaces (NULL when the key had
 * none), new_rec the record now stored (NULL when it was removed, e.g. a purged tombstone).
 * Both must have the same key.
 */
void merkle_update(struct merkle *m, const struct store_rec *old, const struct store_rec *new_rec);

/*
 * The same at the digest level, for callers that keep digests (the store's undo log): replaces
 * digest dold (NULL: none) by dnew (NULL: none) in the leaf of key_hash.
 */
void merkle_apply(struct merkle *m, uint32_t key_hash, const uint8_t *dold, const uint8_t *dnew);

/* Adds a record that is not in the tree yet (building from the store at startup). */
void merkle_add(struct merkle *m, const struct store_rec *rec);

/* Root digest (rehashing dirty nodes first). */
void merkle_root(struct merkle *m, uint8_t out[MERKLE_DIGEST_LEN]);

/*
 * Digest of the node at `level` (0 = root, D = leaves) and `index` (0 .. F^level - 1, in the
 * order of the base-F path). Returns 0, or -EINVAL when level/index is out of range.
 */
int merkle_node(struct merkle *m, unsigned level, uint32_t index, uint8_t out[MERKLE_DIGEST_LEN]);

/* Records in leaf bucket `leaf`, and in the whole tree. */
uint32_t merkle_leaf_count(const struct merkle *m, uint32_t leaf);
uint64_t merkle_count(const struct merkle *m);

/* Bytes of heap the tree uses. */
size_t merkle_memory(const struct merkle *m);

#endif
