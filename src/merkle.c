/* SPDX-License-Identifier: MIT */
/*
 * merkle: the in-memory Merkle tree over all records (replication.md §4); see
 * include/arborkv/merkle.h for the shape, the key hash and the exact digest formulas.
 *
 * Layout: the F^D leaf digests and record counts are two flat arrays indexed by bucket. The inner
 * nodes are one flat array, level by level from the root (level l starts at level_off[l]), each
 * level in base-F path order, so the F children of inner node (l, i) are the contiguous nodes
 * (l + 1, i * F .. i * F + F - 1): a digest is one hash over F * 32 contiguous bytes.
 *
 * Lazy rehash: a write changes its leaf in O(1) and sets the dirty flag of the leaf's ancestors.
 * Invariants: a dirty node's ancestors are all dirty, and a clean node's digest is the digest of
 * its current children (so a clean node's descendants are all clean). Marking therefore stops at
 * the first ancestor already dirty, and a read rehashes, children first, only the dirty nodes
 * below the node it asks for, each once.
 *
 * THREADING: single-threaded (the event-loop thread owns the tree). No global state.
 */
#include "arborkv/merkle.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "arborkv/mem.h"

#define MAX_FANOUT 256 /* merkle.h: fan-out 2..256, a power of two */
#define MAX_DEPTH  8   /* merkle.h: 1..8 levels of inner nodes */

/* The domain-separation strings of merkle.h, hashed without their NUL terminator. */
#define REC_DOMAIN  "arborkv-rec-v1"
#define NODE_DOMAIN "arborkv-node-v1"

static_assert(MERKLE_DIGEST_LEN == crypto_generichash_BYTES, "digest is BLAKE2b-256");
static_assert(crypto_shorthash_BYTES == 8, "key hash reads SipHash-2-4's 8-byte output");
static_assert(crypto_shorthash_KEYBYTES == 16, "SipHash-2-4 takes a 16-byte key");

/*
 * Always-on check for invariants whose silent violation would corrupt the tree (a record removed
 * from a leaf that holds none means the caller's view and the tree disagree).
 */
#define MERKLE_CHECK(expr)                                    \
    do {                                                      \
        if (!(expr)) check_failed(#expr, __FILE__, __LINE__); \
    } while (0)

struct merkle {
    unsigned fanout;                     /* F: 2..256, a power of two */
    unsigned depth;                      /* D: 1..8 levels of inner nodes above the leaves */
    unsigned fanout_bits;                /* log2(F): 1..8 */
    unsigned leaf_bits;                  /* log2(F^D) = D * fanout_bits: 1..24 */
    uint32_t nleaves;                    /* F^D <= MERKLE_MAX_LEAVES */
    uint32_t ninner;                     /* inner nodes: F^0 + ... + F^(D-1) */
    uint32_t level_off[MAX_DEPTH];       /* inner[] index of the first node of each inner level */
    uint8_t (*leaf)[MERKLE_DIGEST_LEN];  /* nleaves leaf digests (sums mod 2^256, LE) */
    uint32_t *leaf_count;                /* nleaves record counts */
    uint8_t (*inner)[MERKLE_DIGEST_LEN]; /* ninner inner digests; valid where !dirty */
    uint8_t *dirty;                      /* ninner flags: 1 = digest stale, rehash on read */
    uint64_t count;                      /* records in the tree (sum of leaf_count) */
};

static void check_failed(const char *expr, const char *file, int line)
{
    fprintf(stderr, "%s:%d: merkle invariant violated: %s\n", file, line, expr);
    abort();
}

static void store_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

/*
 * 256-bit sums, byte by byte. Bytes rather than 64-bit words on purpose: with random digests a
 * carry or borrow into a byte that is then exactly 0x00 or 0xff happens every few hundred
 * operations, so the tests exercise every path (with words it takes ~2^64 tries); the cost is
 * noise next to the BLAKE2b of the record.
 */

/* acc += x modulo 2^256, both little-endian. */
static void sum_add(uint8_t acc[MERKLE_DIGEST_LEN], const uint8_t x[MERKLE_DIGEST_LEN])
{
    unsigned carry = 0;
    for (int i = 0; i < MERKLE_DIGEST_LEN; i++) {
        unsigned s = (unsigned) acc[i] + x[i] + carry; /* <= 511 */
        acc[i] = (uint8_t) s;
        carry = s >> 8;
    }
}

/* acc -= x modulo 2^256, both little-endian. */
static void sum_sub(uint8_t acc[MERKLE_DIGEST_LEN], const uint8_t x[MERKLE_DIGEST_LEN])
{
    unsigned borrow = 0;
    for (int i = 0; i < MERKLE_DIGEST_LEN; i++) {
        unsigned sub = (unsigned) x[i] + borrow; /* <= 256 */
        borrow = acc[i] < sub;
        acc[i] = (uint8_t) (acc[i] + 256u - sub);
    }
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

int merkle_new(struct merkle **out, unsigned fanout, unsigned depth)
{
    *out = NULL;
    if (fanout < 2 || fanout > MAX_FANOUT || (fanout & (fanout - 1)) != 0) return -EINVAL;
    if (depth < 1 || depth > MAX_DEPTH) return -EINVAL;
    unsigned fanout_bits = 0;
    while ((1u << fanout_bits) < fanout)
        fanout_bits++;
    unsigned leaf_bits = depth * fanout_bits; /* <= 8 * 8: no overflow */
    if (leaf_bits >= 32 || (UINT32_C(1) << leaf_bits) > MERKLE_MAX_LEAVES) return -EINVAL;

    struct merkle *m = xcalloc(1, sizeof(*m));
    m->fanout = fanout;
    m->depth = depth;
    m->fanout_bits = fanout_bits;
    m->leaf_bits = leaf_bits;
    m->nleaves = UINT32_C(1) << leaf_bits;
    uint32_t off = 0;
    for (unsigned l = 0; l < depth; l++) {
        m->level_off[l] = off;
        off += UINT32_C(1) << (l * fanout_bits);
    }
    m->ninner = off;
    /* All zero: every leaf empty, every inner node the zero digest of an empty subtree, clean. */
    m->leaf = xcalloc(m->nleaves, sizeof(*m->leaf));
    m->leaf_count = xcalloc(m->nleaves, sizeof(*m->leaf_count));
    m->inner = xcalloc(m->ninner, sizeof(*m->inner));
    m->dirty = xcalloc(m->ninner, sizeof(*m->dirty));
    *out = m;
    return 0;
}

void merkle_free(struct merkle *m)
{
    if (!m) return;
    free(m->leaf);
    free(m->leaf_count);
    free(m->inner);
    free(m->dirty);
    free(m);
}

unsigned merkle_fanout(const struct merkle *m)
{
    return m->fanout;
}

unsigned merkle_depth(const struct merkle *m)
{
    return m->depth;
}

uint32_t merkle_leaves(const struct merkle *m)
{
    return m->nleaves;
}

uint32_t merkle_key_hash(const uint8_t *key, size_t key_len)
{
    static const uint8_t zero_key[crypto_shorthash_KEYBYTES]; /* merkle.h: all-zero key */
    static const uint8_t empty[1];
    uint8_t h[crypto_shorthash_BYTES];
    (void) crypto_shorthash(h, key_len ? key : empty, key_len, zero_key); /* cannot fail */
    return (uint32_t) h[0] << 24 | (uint32_t) h[1] << 16 | (uint32_t) h[2] << 8 | h[3];
}

uint32_t merkle_bucket_of(const struct merkle *m, uint32_t key_hash)
{
    return key_hash >> (32 - m->leaf_bits); /* leaf_bits 1..24 */
}

void merkle_bucket_range(const struct merkle *m, uint32_t leaf, uint32_t *lo, uint32_t *hi)
{
    assert(leaf < m->nleaves);
    unsigned shift = 32 - m->leaf_bits; /* 8..31 */
    *lo = leaf << shift;
    *hi = *lo | ((UINT32_C(1) << shift) - 1);
}

static void hash_u64le(crypto_generichash_state *st, uint64_t v)
{
    uint8_t le[8];
    store_le64(le, v);
    (void) crypto_generichash_update(st, le, sizeof(le));
}

void merkle_record_digest(const struct store_rec *rec, uint8_t out[MERKLE_DIGEST_LEN])
{
    /*
     * crypto_generichash_* only fail on an output or key length out of range; both are fixed
     * here, hence the (void) casts.
     */
    crypto_generichash_state st;
    (void) crypto_generichash_init(&st, NULL, 0, MERKLE_DIGEST_LEN);
    (void) crypto_generichash_update(&st, (const uint8_t *) REC_DOMAIN, sizeof(REC_DOMAIN) - 1);
    hash_u64le(&st, rec->key_len);
    if (rec->key_len) (void) crypto_generichash_update(&st, rec->key, rec->key_len);
    uint8_t tomb = rec->tombstone ? 1 : 0;
    (void) crypto_generichash_update(&st, &tomb, 1);
    /* A tombstone's value is empty whatever value/value_len say (store_put ignores them too). */
    size_t value_len = rec->tombstone ? 0 : rec->value_len;
    hash_u64le(&st, value_len);
    if (value_len) (void) crypto_generichash_update(&st, rec->value, value_len);
    hash_u64le(&st, rec->ts);
    (void) crypto_generichash_update(&st, rec->op_id, STORE_OP_ID_BYTES);
    (void) crypto_generichash_final(&st, out, MERKLE_DIGEST_LEN);
}

/* Sets the dirty flag of the ancestors of leaf bucket `leaf`, up to the first one already set. */
static void mark_path(struct merkle *m, uint32_t leaf)
{
    uint32_t idx = leaf;
    for (unsigned l = m->depth; l-- > 0;) {
        idx >>= m->fanout_bits;
        uint8_t *d = &m->dirty[m->level_off[l] + idx];
        if (*d) break; /* its ancestors are dirty already (invariant in the file header) */
        *d = 1;
    }
}

void merkle_apply(struct merkle *m, uint32_t key_hash, const uint8_t *dold, const uint8_t *dnew)
{
    if (!dold && !dnew) return;
    uint32_t leaf = merkle_bucket_of(m, key_hash);
    if (dold && dnew) {
        if (memcmp(dold, dnew, MERKLE_DIGEST_LEN) == 0) return; /* same record: nothing changes */
        sum_sub(m->leaf[leaf], dold);
        sum_add(m->leaf[leaf], dnew);
    } else if (dold) {
        MERKLE_CHECK(m->leaf_count[leaf] > 0);
        sum_sub(m->leaf[leaf], dold);
        m->leaf_count[leaf]--;
        m->count--;
    } else {
        MERKLE_CHECK(m->leaf_count[leaf] < UINT32_MAX);
        sum_add(m->leaf[leaf], dnew);
        m->leaf_count[leaf]++;
        m->count++;
    }
    mark_path(m, leaf);
}

void merkle_update(struct merkle *m, const struct store_rec *old, const struct store_rec *new_rec)
{
    if (!old && !new_rec) return;
    const struct store_rec *k = new_rec ? new_rec : old;
    assert(!old || !new_rec ||
           (old->key_len == new_rec->key_len &&
            (old->key_len == 0 || memcmp(old->key, new_rec->key, old->key_len) == 0)));
    uint8_t dold[MERKLE_DIGEST_LEN], dnew[MERKLE_DIGEST_LEN];
    if (old) merkle_record_digest(old, dold);
    if (new_rec) merkle_record_digest(new_rec, dnew);
    merkle_apply(m, merkle_key_hash(k->key, k->key_len), old ? dold : NULL, new_rec ? dnew : NULL);
}

void merkle_add(struct merkle *m, const struct store_rec *rec)
{
    merkle_update(m, NULL, rec);
}

/*
 * Returns the current digest of node (level, idx), rehashing first the dirty inner nodes below
 * it (children before parents, each once) and the node itself. Recursion depth <= D <= 8.
 */
static const uint8_t *node_digest(struct merkle *m, unsigned level, uint32_t idx)
{
    if (level == m->depth) return m->leaf[idx];
    uint32_t node = m->level_off[level] + idx;
    if (!m->dirty[node]) return m->inner[node];
    uint32_t first = idx << m->fanout_bits;
    const uint8_t *children;
    if (level + 1 == m->depth) {
        children = m->leaf[first];
    } else {
        for (uint32_t c = 0; c < m->fanout; c++)
            (void) node_digest(m, level + 1, first + c);
        children = m->inner[m->level_off[level + 1] + first];
    }
    size_t len = (size_t) m->fanout * MERKLE_DIGEST_LEN;
    if (all_zero(children, len)) {
        memset(m->inner[node], 0, MERKLE_DIGEST_LEN); /* merkle.h: empty subtree */
    } else {
        crypto_generichash_state st;
        (void) crypto_generichash_init(&st, NULL, 0, MERKLE_DIGEST_LEN);
        (void) crypto_generichash_update(&st, (const uint8_t *) NODE_DOMAIN,
                                         sizeof(NODE_DOMAIN) - 1);
        (void) crypto_generichash_update(&st, children, len);
        (void) crypto_generichash_final(&st, m->inner[node], MERKLE_DIGEST_LEN);
    }
    m->dirty[node] = 0;
    return m->inner[node];
}

void merkle_root(struct merkle *m, uint8_t out[MERKLE_DIGEST_LEN])
{
    memcpy(out, node_digest(m, 0, 0), MERKLE_DIGEST_LEN);
}

int merkle_node(struct merkle *m, unsigned level, uint32_t index, uint8_t out[MERKLE_DIGEST_LEN])
{
    if (level > m->depth) return -EINVAL;
    if (index >= UINT32_C(1) << (level * m->fanout_bits)) return -EINVAL; /* shift <= 24 */
    memcpy(out, node_digest(m, level, index), MERKLE_DIGEST_LEN);
    return 0;
}

uint32_t merkle_leaf_count(const struct merkle *m, uint32_t leaf)
{
    assert(leaf < m->nleaves);
    return m->leaf_count[leaf];
}

uint64_t merkle_count(const struct merkle *m)
{
    return m->count;
}

size_t merkle_memory(const struct merkle *m)
{
    return sizeof(*m) + (size_t) m->nleaves * (sizeof(*m->leaf) + sizeof(*m->leaf_count)) +
           (size_t) m->ninner * (sizeof(*m->inner) + sizeof(*m->dirty));
}
