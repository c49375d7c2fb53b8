/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the Merkle tree (replication.md §4, include/arborkv/merkle.h).
 *
 * Expected digests are computed here independently of src/merkle.c, straight from the header's
 * formulas: record digests by hashing one hand-assembled byte string, leaf sums by byte-wise
 * addition with carry, inner digests by hashing the concatenated children. A reference tree built
 * that way from a list of records is compared node by node with the real one, over random
 * operation sequences that interleave writes and reads (lazy rehash).
 */
#include "arborkv/merkle.h"

#include <errno.h>

#include <sodium.h>

#include "harness.h"

#define DLEN MERKLE_DIGEST_LEN

/* libsodium wants sodium_init() first (main.c does it for the server). */
__attribute__((constructor)) static void init_sodium(void)
{
    if (sodium_init() < 0) abort();
}

/* ---- records ------------------------------------------------------------------------------- */

#define KEY_MAX   24
#define VALUE_MAX 48

/* A record that owns its bytes; view() lends it out as a store_rec. */
struct trec {
    uint8_t key[KEY_MAX];
    size_t key_len;
    uint8_t value[VALUE_MAX];
    size_t value_len; /* 0 for a tombstone */
    bool tomb;
    uint64_t ts;
    uint8_t op_id[STORE_OP_ID_BYTES];
};

static struct store_rec view(const struct trec *t)
{
    struct store_rec r = { .key = t->key,
                           .key_len = t->key_len,
                           .value = t->tomb ? NULL : t->value,
                           .value_len = t->tomb ? 0 : t->value_len,
                           .tombstone = t->tomb,
                           .ts = t->ts };
    memcpy(r.op_id, t->op_id, STORE_OP_ID_BYTES);
    return r;
}

static void add_rec(struct merkle *m, const struct trec *t)
{
    struct store_rec r = view(t);
    merkle_add(m, &r);
}

static void update_rec(struct merkle *m, const struct trec *old, const struct trec *new_rec)
{
    struct store_rec o, n;
    if (old) o = view(old);
    if (new_rec) n = view(new_rec);
    merkle_update(m, old ? &o : NULL, new_rec ? &n : NULL);
}

/* splitmix64: a deterministic generator, so a failure reproduces. */
static uint64_t rng_state = 0x5eed;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint32_t rnd_below(uint32_t n)
{
    return (uint32_t) (rnd() % n);
}

static void rnd_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t) rnd();
}

/* A random version of a record whose key is already set: value or tombstone, ts, op_id. */
static void rnd_version(struct trec *t)
{
    t->tomb = rnd_below(10) == 0;
    t->value_len = t->tomb ? 0 : rnd_below(VALUE_MAX + 1);
    rnd_bytes(t->value, t->value_len);
    t->ts = (UINT64_C(1) << 40) + (rnd() >> 2);
    rnd_bytes(t->op_id, sizeof(t->op_id));
}

/* A random record with a key unique to i (its first 4 bytes) plus 0..20 random bytes. */
static void rnd_rec(struct trec *t, uint32_t i)
{
    memset(t, 0, sizeof(*t));
    t->key_len = 4 + rnd_below(KEY_MAX - 4 + 1);
    memcpy(t->key, &i, 4);
    rnd_bytes(t->key + 4, t->key_len - 4);
    rnd_version(t);
}

static void shuffle(uint32_t *order, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        order[i] = i;
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = rnd_below(i), tmp = order[i - 1];
        order[i - 1] = order[j];
        order[j] = tmp;
    }
}

static struct trec set_rec(const char *key, const char *value, uint64_t ts, uint8_t id0)
{
    struct trec t;
    memset(&t, 0, sizeof(t));
    t.key_len = strlen(key);
    memcpy(t.key, key, t.key_len);
    if (value) {
        t.value_len = strlen(value);
        memcpy(t.value, value, t.value_len);
    } else {
        t.tomb = true;
    }
    t.ts = ts;
    t.op_id[0] = id0;
    return t;
}

/* ---- the reference model: merkle.h's formulas, written out independently --------------------- */

static const uint8_t zeros[DLEN];

static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

/* record digest = H("arborkv-rec-v1" | u64le(key_len) | key | u8(tomb) | u64le(value_len) |
 * value | u64le(ts) | op_id[16]), over one contiguous buffer. */
static void ref_record_digest(const struct trec *t, uint8_t out[DLEN])
{
    uint8_t buf[14 + 8 + KEY_MAX + 1 + 8 + VALUE_MAX + 8 + 16];
    size_t n = 0;
    memcpy(buf, "arborkv-rec-v1", 14);
    n += 14;
    put_u64le(buf + n, t->key_len);
    n += 8;
    memcpy(buf + n, t->key, t->key_len);
    n += t->key_len;
    buf[n++] = t->tomb ? 1 : 0;
    size_t vlen = t->tomb ? 0 : t->value_len;
    put_u64le(buf + n, vlen);
    n += 8;
    memcpy(buf + n, t->value, vlen);
    n += vlen;
    put_u64le(buf + n, t->ts);
    n += 8;
    memcpy(buf + n, t->op_id, 16);
    n += 16;
    ASSERT_OK(crypto_generichash(out, DLEN, buf, n, NULL, 0));
}

/* acc += x mod 2^256, byte by byte; sets carry_out[i] when a carry leaves byte i. */
static void ref_add(uint8_t acc[DLEN], const uint8_t x[DLEN], bool carry_out[DLEN])
{
    unsigned c = 0;
    for (int i = 0; i < DLEN; i++) {
        unsigned s = acc[i] + x[i] + c;
        acc[i] = (uint8_t) s;
        c = s >> 8;
        if (carry_out) carry_out[i] = c != 0;
    }
}

static uint32_t ref_key_hash(const uint8_t *key, size_t key_len)
{
    uint8_t k[crypto_shorthash_KEYBYTES] = { 0 }, h[crypto_shorthash_BYTES];
    ASSERT_OK(crypto_shorthash(h, key, key_len, k));
    return (uint32_t) h[0] << 24 | (uint32_t) h[1] << 16 | (uint32_t) h[2] << 8 | h[3];
}

static unsigned log2u(unsigned v)
{
    unsigned b = 0;
    while ((1u << b) < v)
        b++;
    return b;
}

/* inner digest = zeros if all F children are zero, else H("arborkv-node-v1" | children). */
static void ref_inner(const uint8_t *children, unsigned fanout, uint8_t out[DLEN])
{
    bool empty = true;
    for (unsigned c = 0; c < fanout; c++)
        if (memcmp(children + (size_t) c * DLEN, zeros, DLEN) != 0) empty = false;
    if (empty) {
        memset(out, 0, DLEN);
        return;
    }
    size_t n = 15 + (size_t) fanout * DLEN;
    uint8_t *buf = malloc(n);
    ASSERT(buf != NULL);
    memcpy(buf, "arborkv-node-v1", 15);
    memcpy(buf + 15, children, (size_t) fanout * DLEN);
    ASSERT_OK(crypto_generichash(out, DLEN, buf, n, NULL, 0));
    free(buf);
}

/* Every node digest of a tree of shape F x D holding recs[0..n) (NULL entries skipped). */
struct ref_tree {
    unsigned fanout, depth, bits; /* bits = log2(F) */
    uint8_t *level[9];            /* level l: F^l digests, in base-F path order */
    uint32_t *count;              /* records per leaf */
};

static void ref_build(struct ref_tree *r, unsigned fanout, unsigned depth, const struct trec *recs,
                      const bool *present, uint32_t n)
{
    memset(r, 0, sizeof(*r));
    r->fanout = fanout;
    r->depth = depth;
    r->bits = log2u(fanout);
    for (unsigned l = 0; l <= depth; l++) {
        r->level[l] = calloc((size_t) 1 << (l * r->bits), DLEN);
        ASSERT(r->level[l] != NULL);
    }
    uint32_t leaves = UINT32_C(1) << (depth * r->bits);
    r->count = calloc(leaves, sizeof(*r->count));
    ASSERT(r->count != NULL);
    for (uint32_t i = 0; i < n; i++) {
        if (present && !present[i]) continue;
        uint8_t d[DLEN];
        ref_record_digest(&recs[i], d);
        uint32_t leaf = ref_key_hash(recs[i].key, recs[i].key_len) >> (32 - depth * r->bits);
        ref_add(r->level[depth] + (size_t) leaf * DLEN, d, NULL);
        r->count[leaf]++;
    }
    for (unsigned l = depth; l-- > 0;)
        for (uint32_t i = 0; i < (UINT32_C(1) << (l * r->bits)); i++)
            ref_inner(r->level[l + 1] + (size_t) i * fanout * DLEN, fanout,
                      r->level[l] + (size_t) i * DLEN);
}

static void ref_free(struct ref_tree *r)
{
    for (unsigned l = 0; l <= r->depth; l++)
        free(r->level[l]);
    free(r->count);
}

/* Compares every node of m with r, levels top-down or bottom-up (to vary the lazy rehash). */
static void check_against_ref(struct merkle *m, const struct ref_tree *r, bool top_down)
{
    ASSERT_EQ(merkle_fanout(m), r->fanout);
    ASSERT_EQ(merkle_depth(m), r->depth);
    for (unsigned k = 0; k <= r->depth; k++) {
        unsigned l = top_down ? k : r->depth - k;
        for (uint32_t i = 0; i < (UINT32_C(1) << (l * r->bits)); i++) {
            uint8_t d[DLEN];
            ASSERT_OK(merkle_node(m, l, i, d));
            ASSERT_MEM_EQ(d, r->level[l] + (size_t) i * DLEN, DLEN);
        }
    }
    uint8_t root[DLEN];
    merkle_root(m, root);
    ASSERT_MEM_EQ(root, r->level[0], DLEN);
    uint64_t total = 0;
    for (uint32_t i = 0; i < merkle_leaves(m); i++) {
        ASSERT_EQ(merkle_leaf_count(m, i), r->count[i]);
        total += r->count[i];
    }
    ASSERT_U64_EQ(merkle_count(m), total);
}

/* Every node of a equals the same node of b (same shape). */
static void check_same_tree(struct merkle *a, struct merkle *b)
{
    ASSERT_EQ(merkle_fanout(a), merkle_fanout(b));
    ASSERT_EQ(merkle_depth(a), merkle_depth(b));
    unsigned bits = log2u(merkle_fanout(a));
    for (unsigned l = 0; l <= merkle_depth(a); l++)
        for (uint32_t i = 0; i < (UINT32_C(1) << (l * bits)); i++) {
            uint8_t da[DLEN], db[DLEN];
            ASSERT_OK(merkle_node(a, l, i, da));
            ASSERT_OK(merkle_node(b, l, i, db));
            ASSERT_MEM_EQ(da, db, DLEN);
        }
    ASSERT_U64_EQ(merkle_count(a), merkle_count(b));
}

static struct merkle *new_ok(unsigned fanout, unsigned depth)
{
    struct merkle *m = NULL;
    ASSERT_OK(merkle_new(&m, fanout, depth));
    ASSERT(m != NULL);
    return m;
}

/* ---- shape --------------------------------------------------------------------------------- */

TEST(shape_validation)
{
    static const unsigned bad[][2] = {
        { 0, 4 },   /* fan-out 0 */
        { 1, 4 },   /* fan-out 1 */
        { 3, 2 },   /* not a power of two */
        { 6, 2 },   /* not a power of two */
        { 255, 1 }, /* not a power of two */
        { 257, 1 }, /* > 256 */
        { 512, 1 }, /* > 256, power of two */
        { 16, 0 },  /* depth 0 */
        { 2, 9 },   /* depth > 8 */
        { 2, 100 }, /* depth > 8 */
        { 16, 7 },  /* 2^28 leaves */
        { 256, 4 }, /* 2^32 leaves */
        { 256, 8 }, /* 2^64 leaves */
        { 128, 4 }, /* 2^28 leaves */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct merkle *m = NULL;
        ASSERT_EQ(merkle_new(&m, bad[i][0], bad[i][1]), -EINVAL);
        ASSERT(m == NULL);
    }
    static const unsigned good[][2] = {
        { 16, 4 }, { 2, 1 }, { 256, 3 }, { 4, 8 }, { 16, 5 }, { 8, 7 }, { 256, 1 }, { 2, 8 },
    };
    /* 256 x 3 is the largest shape, 2^24 leaves (~600 MB of which a test touches little: the
     * other cases avoid it, since calloc writes every page when MALLOC_PERTURB_ is set). */
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct merkle *m = new_ok(good[i][0], good[i][1]);
        ASSERT_EQ(merkle_fanout(m), good[i][0]);
        ASSERT_EQ(merkle_depth(m), good[i][1]);
        uint64_t leaves = 1;
        for (unsigned d = 0; d < good[i][1]; d++)
            leaves *= good[i][0];
        ASSERT_U64_EQ(merkle_leaves(m), leaves);
        ASSERT(leaves <= MERKLE_MAX_LEAVES);
        ASSERT_U64_EQ(merkle_count(m), 0);
        uint8_t root[DLEN];
        merkle_root(m, root);
        ASSERT_MEM_EQ(root, zeros, DLEN);
        merkle_free(m);
    }
}

TEST(free_is_null_safe)
{
    merkle_free(NULL);
}

TEST(memory_at_default_shape)
{
    struct merkle *m = new_ok(MERKLE_DEFAULT_FANOUT, MERKLE_DEFAULT_DEPTH);
    ASSERT_EQ(merkle_leaves(m), 65536);
    size_t inner = 1 + 16 + 256 + 4096;
    size_t arrays = 65536 * (DLEN + 4) + inner * (DLEN + 1);
    size_t mem = merkle_memory(m);
    ASSERT(mem >= arrays);
    ASSERT(mem < arrays + 4096);
    ASSERT(mem < 16u * 1024 * 1024);
    /* Writes allocate nothing. */
    struct trec t = set_rec("k", "v", 1, 1);
    add_rec(m, &t);
    ASSERT_EQ(merkle_memory(m), mem);
    merkle_free(m);
}

/* ---- exact digests ------------------------------------------------------------------------- */

TEST(key_hash_is_siphash_prefix_and_picks_top_bits)
{
    /* SipHash-2-4 of "k1" under the zero key, first 4 output bytes big-endian. */
    uint8_t zero_key[16] = { 0 }, h[8];
    ASSERT_OK(crypto_shorthash(h, (const uint8_t *) "k1", 2, zero_key));
    uint32_t expect = (uint32_t) h[0] << 24 | (uint32_t) h[1] << 16 | (uint32_t) h[2] << 8 | h[3];
    ASSERT_EQ(merkle_key_hash((const uint8_t *) "k1", 2), expect);
    ASSERT_EQ(merkle_key_hash((const uint8_t *) "", 0), ref_key_hash((const uint8_t *) "", 0));

    struct merkle *a = new_ok(16, 4), *b = new_ok(2, 1), *c = new_ok(256, 3), *d = new_ok(4, 3);
    for (uint32_t i = 0; i < 1000; i++) {
        uint8_t key[KEY_MAX];
        size_t len = rnd_below(KEY_MAX + 1);
        rnd_bytes(key, len);
        uint32_t kh = merkle_key_hash(key, len);
        ASSERT_EQ(kh, ref_key_hash(key, len));
        ASSERT_EQ(merkle_bucket_of(a, kh), kh >> 16);
        ASSERT_EQ(merkle_bucket_of(b, kh), kh >> 31);
        ASSERT_EQ(merkle_bucket_of(c, kh), kh >> 8);
        ASSERT_EQ(merkle_bucket_of(d, kh), kh >> 26);
    }
    merkle_free(a);
    merkle_free(b);
    merkle_free(c);
    merkle_free(d);
}

TEST(record_digest_exact)
{
    struct trec t = set_rec("k1", "v", UINT64_C(0x0102030405060708), 0);
    for (int i = 0; i < 16; i++)
        t.op_id[i] = (uint8_t) (0xa0 + i);
    /* The byte string of merkle.h's formula, written out by hand. */
    static const uint8_t
            bytes[] = {
                'a',  'r',  'b',  'o',  'r',  'k',  'v',  '-',  'r',  'e',
                'c',  '-',  'v',  '1',                                     /* no NUL */
                2,    0,    0,    0,    0,    0,    0,    0,    'k',  '1', /* key */
                0,                                                         /* not a tombstone */
                1,    0,    0,    0,    0,    0,    0,    0,    'v',       /* value */
                8,    7,    6,    5,    4,    3,    2,    1,               /* ts */
                0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
                0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
            };
    uint8_t expect[DLEN], got[DLEN];
    ASSERT_OK(crypto_generichash(expect, DLEN, bytes, sizeof(bytes), NULL, 0));
    struct store_rec r = view(&t);
    merkle_record_digest(&r, got);
    ASSERT_MEM_EQ(got, expect, DLEN);

    /* A tombstone: u8(1), empty value; the value fields are ignored even if set. */
    static const uint8_t tomb_bytes[] = {
        'a', 'r', 'b', 'o', 'r', 'k', 'v', '-', 'r', 'e', 'c', '-', 'v', '1',                /* */
        2,   0,   0,   0,   0,   0,   0,   0,   'k', '1', 1,   0,   0,   0,   0, 0, 0, 0, 0, /* */
        9,   0,   0,   0,   0,   0,   0,   0, /* ts */
        7,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0, 0,
    };
    ASSERT_OK(crypto_generichash(expect, DLEN, tomb_bytes, sizeof(tomb_bytes), NULL, 0));
    struct trec tomb = set_rec("k1", NULL, 9, 7);
    r = view(&tomb);
    merkle_record_digest(&r, got);
    ASSERT_MEM_EQ(got, expect, DLEN);
    r.value = (const uint8_t *) "junk";
    r.value_len = 4;
    merkle_record_digest(&r, got);
    ASSERT_MEM_EQ(got, expect, DLEN);

    /* An empty value is not a tombstone; every field matters. */
    struct trec empty = set_rec("k1", "", 9, 7);
    r = view(&empty);
    merkle_record_digest(&r, got);
    ASSERT(memcmp(got, expect, DLEN) != 0);
    uint8_t ref[DLEN];
    ref_record_digest(&empty, ref);
    ASSERT_MEM_EQ(got, ref, DLEN);

    /* Random records, empty keys included, against the reference. */
    for (uint32_t i = 0; i < 2000; i++) {
        struct trec x;
        rnd_rec(&x, i);
        if (i % 100 == 0) x.key_len = 0;
        r = view(&x);
        merkle_record_digest(&r, got);
        ref_record_digest(&x, ref);
        ASSERT_MEM_EQ(got, ref, DLEN);
    }
}

/* The bucket of a record in a 2 x 1 tree (the top bit of its key hash). */
static uint32_t bucket2(const struct trec *t)
{
    return ref_key_hash(t->key, t->key_len) >> 31;
}

TEST(leaf_sum_carries_and_wraps)
{
    /*
     * Two records in one leaf whose digests, added as 256-bit little-endian integers, carry out
     * of bytes 7, 15 and 23 (the 64-bit word boundaries) and out of byte 31 (the sum wraps mod
     * 2^256). Searched deterministically over the second record's ts.
     */
    struct trec a = set_rec("alpha", "1", 1000, 1), b = set_rec("beta", "2", 0, 2);
    uint8_t da[DLEN], db[DLEN], sum[DLEN];
    ref_record_digest(&a, da);
    bool found = false;
    for (uint64_t ts = 1; ts < 100000 && !found; ts++) {
        b.ts = ts;
        if (bucket2(&b) != bucket2(&a)) {
            b.key[3] ^= 1; /* flip a bit of the key: "beta" <-> "bet`" */
            if (bucket2(&b) != bucket2(&a)) continue;
        }
        ref_record_digest(&b, db);
        bool carry[DLEN];
        memcpy(sum, da, DLEN);
        ref_add(sum, db, carry);
        found = carry[7] && carry[15] && carry[23] && carry[31];
    }
    ASSERT(found);

    struct merkle *m = new_ok(2, 1);
    uint32_t leaf = bucket2(&a);
    add_rec(m, &a);
    uint8_t got[DLEN];
    ASSERT_OK(merkle_node(m, 1, leaf, got));
    ASSERT_MEM_EQ(got, da, DLEN);
    add_rec(m, &b);
    ASSERT_OK(merkle_node(m, 1, leaf, got));
    ASSERT_MEM_EQ(got, sum, DLEN);
    ASSERT_OK(merkle_node(m, 1, 1 - leaf, got));
    ASSERT_MEM_EQ(got, zeros, DLEN);
    ASSERT_EQ(merkle_leaf_count(m, leaf), 2);

    /* The root: H("arborkv-node-v1" | leaf 0 | leaf 1). */
    uint8_t buf[15 + 2 * DLEN], expect[DLEN], root[DLEN];
    memcpy(buf, "arborkv-node-v1", 15);
    memcpy(buf + 15 + leaf * DLEN, sum, DLEN);
    memset(buf + 15 + (1 - leaf) * DLEN, 0, DLEN);
    ASSERT_OK(crypto_generichash(expect, DLEN, buf, sizeof(buf), NULL, 0));
    merkle_root(m, root);
    ASSERT_MEM_EQ(root, expect, DLEN);
    ASSERT_OK(merkle_node(m, 0, 0, got));
    ASSERT_MEM_EQ(got, expect, DLEN);

    /* Removing a (borrows back across the same boundaries) leaves exactly b's digest. */
    update_rec(m, &a, NULL);
    ASSERT_OK(merkle_node(m, 1, leaf, got));
    ASSERT_MEM_EQ(got, db, DLEN);
    update_rec(m, &b, NULL);
    ASSERT_OK(merkle_node(m, 1, leaf, got));
    ASSERT_MEM_EQ(got, zeros, DLEN);
    merkle_root(m, root);
    ASSERT_MEM_EQ(root, zeros, DLEN);
    ASSERT_U64_EQ(merkle_count(m), 0);
    merkle_free(m);
}

TEST(inner_digests_exact)
{
    /* 2 x 2: leaves 0..3, level-1 nodes {0,1} and {2,3}. One record in one leaf. */
    struct merkle *m = new_ok(2, 2);
    struct trec t = set_rec("only", "x", 5, 5);
    uint32_t leaf = ref_key_hash(t.key, t.key_len) >> 30;
    add_rec(m, &t);
    uint8_t d[DLEN], buf[15 + 2 * DLEN], n1[2][DLEN], root[DLEN], got[DLEN];
    ref_record_digest(&t, d);

    memset(n1, 0, sizeof(n1));
    memcpy(buf, "arborkv-node-v1", 15);
    memset(buf + 15, 0, 2 * DLEN);
    memcpy(buf + 15 + (leaf & 1) * DLEN, d, DLEN);
    ASSERT_OK(crypto_generichash(n1[leaf >> 1], DLEN, buf, sizeof(buf), NULL, 0));
    /* The sibling subtree is empty: 32 zero bytes, not H(prefix | zeros). */
    memcpy(buf + 15, n1[0], DLEN);
    memcpy(buf + 15 + DLEN, n1[1], DLEN);
    ASSERT_OK(crypto_generichash(root, DLEN, buf, sizeof(buf), NULL, 0));

    ASSERT_OK(merkle_node(m, 1, 0, got));
    ASSERT_MEM_EQ(got, n1[0], DLEN);
    ASSERT_OK(merkle_node(m, 1, 1, got));
    ASSERT_MEM_EQ(got, n1[1], DLEN);
    ASSERT_MEM_EQ(n1[1 - (leaf >> 1)], zeros, DLEN);
    merkle_root(m, got);
    ASSERT_MEM_EQ(got, root, DLEN);
    for (uint32_t i = 0; i < 4; i++) {
        ASSERT_OK(merkle_node(m, 2, i, got));
        ASSERT_MEM_EQ(got, i == leaf ? d : zeros, DLEN);
    }
    merkle_free(m);
}

TEST(empty_tree_and_emptied_tree_are_zero)
{
    struct merkle *m = new_ok(16, 4);
    uint8_t root[DLEN];
    merkle_root(m, root);
    ASSERT_MEM_EQ(root, zeros, DLEN);

    enum { N = 500 };
    static struct trec recs[N];
    for (uint32_t i = 0; i < N; i++) {
        rnd_rec(&recs[i], i);
        add_rec(m, &recs[i]);
    }
    merkle_root(m, root);
    ASSERT(memcmp(root, zeros, DLEN) != 0);
    uint32_t order[N];
    shuffle(order, N);
    for (uint32_t i = 0; i < N; i++) {
        update_rec(m, &recs[order[i]], NULL);
        if (i % 97 == 0) merkle_root(m, root); /* partly rehashed on the way down */
    }
    merkle_root(m, root);
    ASSERT_MEM_EQ(root, zeros, DLEN);
    ASSERT_U64_EQ(merkle_count(m), 0);
    for (unsigned l = 0; l <= 4; l++)
        for (uint32_t i = 0; i < (UINT32_C(1) << (4 * l)); i++) {
            uint8_t d[DLEN];
            ASSERT_OK(merkle_node(m, l, i, d));
            ASSERT_MEM_EQ(d, zeros, DLEN);
        }
    merkle_free(m);
}

/* ---- order independence and locality ------------------------------------------------------- */

static void order_independence(unsigned fanout, unsigned depth)
{
    enum { N = 10000 };
    struct trec *fin = calloc(N, sizeof(*fin)), *old = calloc(N, sizeof(*old)),
                *mid = calloc(N, sizeof(*mid));
    uint32_t *order = calloc(N, sizeof(*order));
    ASSERT(fin && old && mid && order);
    for (uint32_t i = 0; i < N; i++) {
        rnd_rec(&fin[i], i);
        old[i] = fin[i];
        mid[i] = fin[i];
        if (i % 7 != 0) { /* every 7th key's "old" version is already the final one */
            rnd_version(&old[i]);
            old[i].ts = fin[i].ts - 1 - rnd_below(1000);
            rnd_version(&mid[i]);
            mid[i].ts = fin[i].ts - 1;
        }
    }

    struct merkle *t[4];
    for (int k = 0; k < 3; k++) {
        t[k] = new_ok(fanout, depth);
        shuffle(order, N);
        for (uint32_t i = 0; i < N; i++) {
            add_rec(t[k], &fin[order[i]]);
            if (k == 2 && i % 1000 == 0) {
                uint8_t r[DLEN];
                merkle_root(t[k], r); /* reads between writes change nothing */
            }
        }
    }
    /* The fourth tree: older versions first, then updated (some through a middle version). */
    t[3] = new_ok(fanout, depth);
    shuffle(order, N);
    for (uint32_t i = 0; i < N; i++)
        add_rec(t[3], &old[order[i]]);
    uint8_t r3[DLEN];
    merkle_root(t[3], r3);
    shuffle(order, N);
    for (uint32_t i = 0; i < N; i++) {
        uint32_t j = order[i];
        if (j % 3 == 1) {
            update_rec(t[3], &old[j], &mid[j]);
            update_rec(t[3], &mid[j], &fin[j]);
        } else {
            update_rec(t[3], &old[j], &fin[j]);
        }
    }

    uint8_t roots[4][DLEN];
    for (int k = 0; k < 4; k++) {
        merkle_root(t[k], roots[k]);
        ASSERT_MEM_EQ(roots[k], roots[0], DLEN);
        ASSERT_U64_EQ(merkle_count(t[k]), N);
    }
    ASSERT(memcmp(r3, roots[0], DLEN) != 0); /* the old versions really were different */
    for (int k = 1; k < 4; k++)
        check_same_tree(t[0], t[k]);
    struct ref_tree ref;
    ref_build(&ref, fanout, depth, fin, NULL, N);
    check_against_ref(t[3], &ref, false);
    ref_free(&ref);

    for (int k = 0; k < 4; k++)
        merkle_free(t[k]);
    free(fin);
    free(old);
    free(mid);
    free(order);
}

TEST(order_independence_16x4)
{
    order_independence(16, 4);
}

TEST(order_independence_4x3)
{
    order_independence(4, 3); /* 64 leaves: ~156 records summed per leaf */
}

/* Builds two trees from recs; b differs by `how`: 0 = new value, 1 = tombstone, 2 = missing. */
static void single_difference(unsigned fanout, unsigned depth, int how)
{
    enum { N = 2000 };
    static struct trec recs[N];
    for (uint32_t i = 0; i < N; i++)
        rnd_rec(&recs[i], i);
    uint32_t j;
    do { /* a live record, so that turning it into a tombstone is a change */
        j = rnd_below(N);
    } while (recs[j].tomb);
    struct trec changed = recs[j];
    if (how == 0) {
        changed.ts++;
    } else {
        changed.tomb = true;
        changed.value_len = 0;
    }
    struct merkle *a = new_ok(fanout, depth), *b = new_ok(fanout, depth);
    for (uint32_t i = 0; i < N; i++) {
        add_rec(a, &recs[i]);
        if (i != j)
            add_rec(b, &recs[i]);
        else if (how != 2)
            add_rec(b, &changed);
    }
    uint8_t ra[DLEN], rb[DLEN];
    merkle_root(a, ra);
    merkle_root(b, rb);
    ASSERT(memcmp(ra, rb, DLEN) != 0);

    unsigned bits = log2u(fanout);
    uint32_t leaf = merkle_bucket_of(a, merkle_key_hash(recs[j].key, recs[j].key_len));
    for (unsigned l = 0; l <= depth; l++) {
        uint32_t on_path = leaf >> ((depth - l) * bits);
        for (uint32_t i = 0; i < (UINT32_C(1) << (l * bits)); i++) {
            uint8_t da[DLEN], db[DLEN];
            ASSERT_OK(merkle_node(a, l, i, da));
            ASSERT_OK(merkle_node(b, l, i, db));
            ASSERT_EQ(memcmp(da, db, DLEN) != 0, i == on_path);
        }
    }
    ASSERT_EQ(merkle_leaf_count(a, leaf) - merkle_leaf_count(b, leaf), how == 2 ? 1 : 0);

    /* Repairing b makes the trees identical again. */
    if (how == 2)
        update_rec(b, NULL, &recs[j]);
    else
        update_rec(b, &changed, &recs[j]);
    check_same_tree(a, b);
    merkle_free(a);
    merkle_free(b);
}

TEST(single_difference_changes_only_its_path)
{
    for (int how = 0; how < 3; how++) {
        single_difference(16, 4, how);
        single_difference(4, 3, how);
        single_difference(2, 8, how);
    }
}

/* ---- buckets, counts, arguments ------------------------------------------------------------ */

TEST(bucket_ranges_partition_the_key_hash_space)
{
    static const unsigned shapes[][2] = {
        { 2, 1 }, { 2, 8 }, { 4, 3 }, { 16, 4 }, { 256, 1 }, { 8, 7 }, { 16, 5 }, { 256, 3 },
    };
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        struct merkle *m = new_ok(shapes[s][0], shapes[s][1]);
        uint32_t leaves = merkle_leaves(m);
        uint64_t next = 0; /* the lowest key hash not yet covered */
        for (uint32_t leaf = 0; leaf < leaves; leaf++) {
            uint32_t lo = 1, hi = 0;
            merkle_bucket_range(m, leaf, &lo, &hi);
            ASSERT_U64_EQ(lo, next);
            ASSERT(lo <= hi);
            ASSERT_U64_EQ((uint64_t) hi - lo + 1, (UINT64_C(1) << 32) / leaves);
            ASSERT_EQ(merkle_bucket_of(m, lo), leaf);
            ASSERT_EQ(merkle_bucket_of(m, hi), leaf);
            ASSERT_EQ(merkle_bucket_of(m, lo + (hi - lo) / 2), leaf);
            next = (uint64_t) hi + 1;
        }
        ASSERT_U64_EQ(next, UINT64_C(1) << 32);
        for (int i = 0; i < 1000; i++) {
            uint32_t kh = (uint32_t) rnd(), lo, hi;
            uint32_t leaf = merkle_bucket_of(m, kh);
            ASSERT(leaf < leaves);
            merkle_bucket_range(m, leaf, &lo, &hi);
            ASSERT(lo <= kh && kh <= hi);
        }
        if (leaves == MERKLE_MAX_LEAVES) { /* the largest shape's last leaf, and one past it */
            uint8_t d[DLEN];
            ASSERT_OK(merkle_node(m, shapes[s][1], MERKLE_MAX_LEAVES - 1, d));
            ASSERT_MEM_EQ(d, zeros, DLEN);
            ASSERT_EQ(merkle_node(m, shapes[s][1], MERKLE_MAX_LEAVES, d), -EINVAL);
            ASSERT_EQ(merkle_node(m, shapes[s][1] + 1, 0, d), -EINVAL);
        }
        merkle_free(m);
    }
}

TEST(counts_per_leaf_and_total)
{
    enum { N = 3000 };
    static struct trec recs[N], newer[N];
    static bool present[N];
    struct merkle *m = new_ok(4, 2); /* 16 leaves */
    for (uint32_t i = 0; i < N; i++) {
        rnd_rec(&recs[i], i);
        add_rec(m, &recs[i]);
        present[i] = true;
    }
    ASSERT_U64_EQ(merkle_count(m), N);
    /* Updates keep the counts; removals lower them; re-adds raise them. */
    for (uint32_t i = 0; i < N; i += 2) {
        newer[i] = recs[i];
        rnd_version(&newer[i]);
        update_rec(m, &recs[i], &newer[i]);
        recs[i] = newer[i];
    }
    ASSERT_U64_EQ(merkle_count(m), N);
    uint64_t expect = N;
    for (uint32_t i = 0; i < N; i += 3) {
        update_rec(m, &recs[i], NULL);
        present[i] = false;
        expect--;
    }
    for (uint32_t i = 0; i < N; i += 9) {
        update_rec(m, NULL, &recs[i]);
        present[i] = true;
        expect++;
    }
    ASSERT_U64_EQ(merkle_count(m), expect);
    uint32_t per_leaf[16] = { 0 };
    for (uint32_t i = 0; i < N; i++)
        if (present[i]) per_leaf[ref_key_hash(recs[i].key, recs[i].key_len) >> 28]++;
    uint64_t sum = 0;
    for (uint32_t leaf = 0; leaf < 16; leaf++) {
        ASSERT_EQ(merkle_leaf_count(m, leaf), per_leaf[leaf]);
        sum += merkle_leaf_count(m, leaf);
    }
    ASSERT_U64_EQ(sum, expect);
    struct ref_tree ref;
    ref_build(&ref, 4, 2, recs, present, N);
    check_against_ref(m, &ref, true);
    ref_free(&ref);
    merkle_free(m);
}

TEST(update_noop_cases)
{
    struct merkle *m = new_ok(16, 2);
    struct trec a = set_rec("a", "1", 1, 1), a2 = set_rec("a", "1", 1, 1);
    add_rec(m, &a);
    uint8_t before[DLEN], after[DLEN];
    merkle_root(m, before);
    merkle_update(m, NULL, NULL);
    update_rec(m, &a, &a);  /* the same record object */
    update_rec(m, &a, &a2); /* an identical record */
    merkle_root(m, after);
    ASSERT_MEM_EQ(before, after, DLEN);
    ASSERT_U64_EQ(merkle_count(m), 1);
    /* A value replaced by a tombstone is a change, not a removal. */
    struct trec del = set_rec("a", NULL, 2, 1);
    update_rec(m, &a, &del);
    merkle_root(m, after);
    ASSERT(memcmp(before, after, DLEN) != 0);
    ASSERT_U64_EQ(merkle_count(m), 1);
    update_rec(m, &del, &a);
    merkle_root(m, after);
    ASSERT_MEM_EQ(before, after, DLEN);
    merkle_free(m);
}

TEST(node_argument_errors)
{
    struct merkle *m = new_ok(16, 4);
    uint8_t d[DLEN];
    ASSERT_OK(merkle_node(m, 0, 0, d));
    ASSERT_EQ(merkle_node(m, 0, 1, d), -EINVAL);
    ASSERT_OK(merkle_node(m, 1, 15, d));
    ASSERT_EQ(merkle_node(m, 1, 16, d), -EINVAL);
    ASSERT_OK(merkle_node(m, 3, 4095, d));
    ASSERT_EQ(merkle_node(m, 3, 4096, d), -EINVAL);
    ASSERT_OK(merkle_node(m, 4, 65535, d));
    ASSERT_EQ(merkle_node(m, 4, 65536, d), -EINVAL);
    ASSERT_EQ(merkle_node(m, 4, UINT32_MAX, d), -EINVAL);
    ASSERT_EQ(merkle_node(m, 5, 0, d), -EINVAL);
    ASSERT_EQ(merkle_node(m, 32, 0, d), -EINVAL);
    ASSERT_EQ(merkle_node(m, UINT32_MAX, 0, d), -EINVAL);
    merkle_free(m);

    m = new_ok(2, 1);
    ASSERT_OK(merkle_node(m, 1, 1, d));
    ASSERT_EQ(merkle_node(m, 1, 2, d), -EINVAL);
    ASSERT_EQ(merkle_node(m, 2, 0, d), -EINVAL);
    merkle_free(m);
}

/* ---- lazy rehash --------------------------------------------------------------------------- */

static void lazy_rehash(unsigned fanout, unsigned depth)
{
    enum { KEYS = 3000, OPS = 30000, CHECK_EVERY = 2500 };
    static struct trec cur[KEYS];
    static bool present[KEYS];
    memset(present, 0, sizeof(present));
    for (uint32_t i = 0; i < KEYS; i++)
        rnd_rec(&cur[i], i);
    unsigned bits = log2u(fanout);
    struct merkle *m = new_ok(fanout, depth);
    for (uint32_t op = 1; op <= OPS; op++) {
        uint32_t r = rnd_below(100), k = rnd_below(KEYS);
        if (r < 45) { /* write: insert or replace */
            struct trec next = cur[k];
            rnd_version(&next);
            update_rec(m, present[k] ? &cur[k] : NULL, &next);
            cur[k] = next;
            present[k] = true;
        } else if (r < 55) { /* remove */
            if (present[k]) update_rec(m, &cur[k], NULL);
            present[k] = false;
        } else if (r < 85) { /* read a random node at a random level */
            unsigned l = rnd_below(depth + 1);
            uint8_t d[DLEN];
            ASSERT_OK(merkle_node(m, l, rnd_below(UINT32_C(1) << (l * bits)), d));
        } else if (r < 95) { /* read the node just above a random key's leaf */
            uint32_t leaf = merkle_bucket_of(m, merkle_key_hash(cur[k].key, cur[k].key_len));
            uint8_t d[DLEN];
            ASSERT_OK(merkle_node(m, depth - 1, leaf >> bits, d));
        } else {
            uint8_t d[DLEN];
            merkle_root(m, d);
        }
        if (op % CHECK_EVERY == 0) {
            struct ref_tree ref;
            ref_build(&ref, fanout, depth, cur, present, KEYS);
            check_against_ref(m, &ref, (op / CHECK_EVERY) % 2 == 0);
            ref_free(&ref);
            struct merkle *fresh = new_ok(fanout, depth);
            for (uint32_t i = 0; i < KEYS; i++)
                if (present[i]) add_rec(fresh, &cur[i]);
            check_same_tree(m, fresh);
            merkle_free(fresh);
        }
    }
    merkle_free(m);
}

TEST(lazy_rehash_16x3)
{
    lazy_rehash(16, 3);
}

TEST(lazy_rehash_2x8)
{
    lazy_rehash(2, 8);
}

TEST(lazy_rehash_256x1)
{
    lazy_rehash(256, 1);
}

TEST_LIST{
    TEST_ENTRY(shape_validation),
    TEST_ENTRY(free_is_null_safe),
    TEST_ENTRY(memory_at_default_shape),
    TEST_ENTRY(key_hash_is_siphash_prefix_and_picks_top_bits),
    TEST_ENTRY(record_digest_exact),
    TEST_ENTRY(leaf_sum_carries_and_wraps),
    TEST_ENTRY(inner_digests_exact),
    TEST_ENTRY(empty_tree_and_emptied_tree_are_zero),
    TEST_ENTRY(order_independence_16x4),
    TEST_ENTRY(order_independence_4x3),
    TEST_ENTRY(single_difference_changes_only_its_path),
    TEST_ENTRY(bucket_ranges_partition_the_key_hash_space),
    TEST_ENTRY(counts_per_leaf_and_total),
    TEST_ENTRY(update_noop_cases),
    TEST_ENTRY(node_argument_errors),
    TEST_ENTRY(lazy_rehash_16x3),
    TEST_ENTRY(lazy_rehash_2x8),
    TEST_ENTRY(lazy_rehash_256x1),
};

TEST_MAIN()
