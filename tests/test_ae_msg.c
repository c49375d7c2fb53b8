/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for ae_msg: the binary messages of anti-entropy (docs/anti-entropy.md, "Messages").
 *
 * Other nodes and SYNC depend on these bytes, so every message type is first compared with one
 * message written out by hand from the documented layout, independent of the encoder. Then, per
 * type: a round trip of every field, every truncation and any byte left over rejected, counts
 * and lengths that claim more than the message holds or exceed their limit rejected. Then the
 * header (magic, version, unknown types, sender ids), the record rules, body decoders given
 * another type, and a deterministic loop of mutated messages. Every decode reads a heap copy of
 * exactly the message's length and touches the first and last byte of everything it borrows, so
 * under ASan a read past the end fails the case.
 */
#include "arborkv/ae_msg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arborkv/buf.h"
#include "harness.h"

static const uint8_t OPID_A[STORE_OP_ID_BYTES] = { 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                                   0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f };
static const uint8_t OPID_B[STORE_OP_ID_BYTES] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

/* ---- writing messages by hand (malformed ones included) ---- */

static void h_raw(struct buf *b, const void *p, size_t n)
{
    buf_append(b, p, n);
}

static void h_le(struct buf *b, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t) (v >> (8 * i));
        buf_append(b, &c, 1);
    }
}

/* A header with every field chosen: magic, version, type, session, sender id bytes. */
static void h_header_any(struct buf *b, const char *magic, unsigned version, unsigned type,
                         uint64_t sid, const void *from, size_t from_len)
{
    buf_reset(b);
    h_raw(b, magic, 2);
    h_le(b, version, 1);
    h_le(b, type, 1);
    h_le(b, sid, 8);
    h_le(b, from_len, 1);
    h_raw(b, from, from_len);
}

static void h_header(struct buf *b, unsigned type, uint64_t sid, const char *from)
{
    h_header_any(b, "AE", 1, type, sid, from, strlen(from));
}

/* A record in the record layout, every field chosen (tombstone flag and value length too). */
static void h_rec(struct buf *b, const char *key, unsigned tomb, uint64_t ts, const uint8_t *opid,
                  uint32_t value_len, const char *value)
{
    h_le(b, strlen(key), 4);
    h_raw(b, key, strlen(key));
    h_le(b, tomb, 1);
    h_le(b, ts, 8);
    h_raw(b, opid, STORE_OP_ID_BYTES);
    h_le(b, value_len, 4);
    if (value) h_raw(b, value, strlen(value));
}

/* ---- decoding everything a message holds ---- */

static volatile unsigned sink; /* keeps the touching reads */

static void touch(const uint8_t *p, size_t n)
{
    if (n) sink += p[0] + p[n - 1];
}

/* Decodes p[0..len) completely as a receiver would, reading every borrowed byte range's ends. */
static int decode_in_place(const uint8_t *p, size_t len)
{
    struct ae_msg m;
    int rc = ae_msg_open(&m, p, len);
    if (rc < 0) return rc;
    touch((const uint8_t *) m.from, strlen(m.from));
    touch(m.body, m.body_len);
    switch (m.type) {
    case AE_MSG_NODES_REQ: {
        struct ae_msg_nodes_req q;
        rc = ae_msg_get_nodes_req(&m, &q);
        for (uint32_t i = 0; rc == 0 && i < q.n; i++)
            sink += ae_msg_nodes_req_index(&q, i);
        return rc;
    }
    case AE_MSG_NODES: {
        struct ae_msg_nodes a;
        rc = ae_msg_get_nodes(&m, &a);
        for (uint32_t i = 0; rc == 0 && i < a.n; i++) {
            const uint8_t *dg;
            sink += ae_msg_nodes_entry(&a, i, &dg);
            touch(dg, (size_t) a.fanout * AE_MSG_DIGEST_LEN);
        }
        return rc;
    }
    case AE_MSG_RECS_REQ: {
        struct ae_msg_recs_req q;
        rc = ae_msg_get_recs_req(&m, &q);
        for (uint32_t i = 0; rc == 0 && i < q.n; i++)
            sink += ae_msg_recs_req_leaf(&q, i);
        if (rc == 0) touch(q.after.p, q.after.len);
        return rc;
    }
    case AE_MSG_RECS:
    case AE_MSG_DROP: {
        struct ae_recs r;
        rc = m.type == AE_MSG_RECS ? ae_msg_get_recs(&m, &r) : ae_msg_get_drop(&m, &r);
        if (rc < 0) return rc;
        touch(r.after.p, r.after.len);
        struct store_rec rec;
        while ((rc = ae_recs_next(&r, &rec)) == 1) {
            touch(rec.key, rec.key_len);
            touch(rec.value, rec.value_len);
        }
        return rc;
    }
    }
    ASSERT(!"ae_msg_open returned an unknown type");
    return -EBADMSG;
}

/* decode_in_place on a heap copy of exactly len bytes. */
static int decode_whole(const uint8_t *p, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    ASSERT(copy != NULL);
    if (len) memcpy(copy, p, len);
    int rc = decode_in_place(copy, len);
    free(copy);
    ASSERT(rc == 0 || rc == -EBADMSG);
    return rc;
}

static void expect_ok_at(int at, const struct buf *b)
{
    int rc = decode_whole(b->data, b->len);
    if (rc != 0) {
        fprintf(stderr, "%s:%d: expected a valid message, got %d\n", __FILE__, at, rc);
        abort();
    }
}
#define EXPECT_OK(b) expect_ok_at(__LINE__, (b))

static void expect_bad_at(int at, const struct buf *b)
{
    int rc = decode_whole(b->data, b->len);
    if (rc != -EBADMSG) {
        fprintf(stderr, "%s:%d: expected -EBADMSG, got %d\n", __FILE__, at, rc);
        abort();
    }
}
#define EXPECT_BAD(b) expect_bad_at(__LINE__, (b))

/* Every prefix of a valid message, and the message with one byte more, must be rejected. */
static void expect_truncations_bad_at(int at, const struct buf *b)
{
    expect_ok_at(at, b);
    for (size_t len = 0; len < b->len; len++) {
        int rc = decode_whole(b->data, len);
        if (rc != -EBADMSG) {
            fprintf(stderr, "%s:%d: %zu of %zu bytes: expected -EBADMSG, got %d\n", __FILE__, at,
                    len, b->len, rc);
            abort();
        }
    }
    struct buf longer;
    buf_init(&longer);
    h_raw(&longer, b->data, b->len);
    h_le(&longer, 0, 1);
    expect_bad_at(at, &longer);
    buf_clear(&longer);
}
#define EXPECT_TRUNCATIONS_BAD(b) expect_truncations_bad_at(__LINE__, (b))

#define EXPECT_BYTES(b, lit)                                         \
    do {                                                             \
        ASSERT_EQ((b)->len, sizeof(lit) - 1);                        \
        ASSERT_MEM_EQ((b)->data, (const uint8_t *) (lit), (b)->len); \
    } while (0)

/* ---- records ---- */

static struct store_rec mk_rec(const void *key, size_t key_len, const void *value, size_t value_len,
                               bool tombstone, uint64_t ts, const uint8_t *opid)
{
    struct store_rec r = { .key = key,
                           .key_len = key_len,
                           .value = value,
                           .value_len = value_len,
                           .tombstone = tombstone,
                           .ts = ts };
    memcpy(r.op_id, opid, STORE_OP_ID_BYTES);
    return r;
}

static struct store_rec mk_live(const char *key, const char *value, uint64_t ts)
{
    return mk_rec(key, strlen(key), value, strlen(value), false, ts, OPID_A);
}

static struct store_rec mk_tomb(const char *key, uint64_t ts)
{
    return mk_rec(key, strlen(key), NULL, 0, true, ts, OPID_B);
}

static void expect_same_rec(const struct store_rec *got, const struct store_rec *want)
{
    ASSERT_EQ(got->key_len, want->key_len);
    if (want->key_len) ASSERT_MEM_EQ(got->key, want->key, want->key_len);
    ASSERT_EQ(got->tombstone, want->tombstone);
    ASSERT_EQ(got->value_len, want->tombstone ? 0 : want->value_len);
    if (!want->tombstone && want->value_len)
        ASSERT_MEM_EQ(got->value, want->value, want->value_len);
    ASSERT_U64_EQ(got->ts, want->ts);
    ASSERT_MEM_EQ(got->op_id, want->op_id, STORE_OP_ID_BYTES);
}

/* ---- exact bytes, written out from docs/anti-entropy.md ---- */

TEST(exact_bytes_nodes_req)
{
    struct buf b;
    buf_init(&b);
    const uint32_t idx[2] = { 7, 0x0a0b0c0d };
    ae_msg_put_nodes_req(&b, 0x0102030405060708u, "n1", 2, idx, 2);
    EXPECT_BYTES(&b, "AE"
                     "\x01"                             /* version */
                     "\x01"                             /* NODES_REQ */
                     "\x08\x07\x06\x05\x04\x03\x02\x01" /* session */
                     "\x02"
                     "n1"                 /* from */
                     "\x02"               /* level */
                     "\x02\x00\x00\x00"   /* n */
                     "\x07\x00\x00\x00"   /* index */
                     "\x0d\x0c\x0b\x0a"); /* index */
    buf_clear(&b);
}

TEST(exact_bytes_nodes)
{
    struct buf b, want;
    buf_init(&b);
    buf_init(&want);
    ae_msg_put_nodes(&b, 5, "p", 2, 3, 1, 1);
    uint8_t *dg = ae_msg_put_nodes_entry(&b, 4, 2);
    memset(dg, 0x11, AE_MSG_DIGEST_LEN);
    memset(dg + AE_MSG_DIGEST_LEN, 0x22, AE_MSG_DIGEST_LEN);
    static const char head[] = "AE"
                               "\x01"                             /* version */
                               "\x02"                             /* NODES */
                               "\x05\x00\x00\x00\x00\x00\x00\x00" /* session */
                               "\x01"
                               "p"                 /* from */
                               "\x02\x00"          /* fanout */
                               "\x03"              /* depth */
                               "\x01"              /* level */
                               "\x01\x00\x00\x00"  /* n */
                               "\x04\x00\x00\x00"; /* index */
    h_raw(&want, head, sizeof(head) - 1);
    uint8_t d1[AE_MSG_DIGEST_LEN], d2[AE_MSG_DIGEST_LEN];
    memset(d1, 0x11, sizeof(d1));
    memset(d2, 0x22, sizeof(d2));
    h_raw(&want, d1, sizeof(d1));
    h_raw(&want, d2, sizeof(d2));
    ASSERT_EQ(b.len, want.len);
    ASSERT_MEM_EQ(b.data, want.data, b.len);
    buf_clear(&b);
    buf_clear(&want);
}

TEST(exact_bytes_recs_req)
{
    struct buf b;
    buf_init(&b);
    const uint32_t leaves[2] = { 1, 65535 };
    ae_recs_req(9, "a", leaves, 2, (const uint8_t *) "k1", 2, true, &b);
    EXPECT_BYTES(&b, "AE"
                     "\x01"                             /* version */
                     "\x03"                             /* RECS_REQ */
                     "\x09\x00\x00\x00\x00\x00\x00\x00" /* session */
                     "\x01"
                     "a"                /* from */
                     "\x02\x00\x00\x00" /* n */
                     "\x01\x00\x00\x00" /* leaf */
                     "\xff\xff\x00\x00" /* leaf */
                     "\x01"             /* has_after */
                     "\x02\x00\x00\x00" /* after_len */
                     "k1");
    ae_recs_req(1, "a", NULL, 0, NULL, 0, false, &b);
    EXPECT_BYTES(&b, "AE"
                     "\x01\x03"
                     "\x01\x00\x00\x00\x00\x00\x00\x00"
                     "\x01"
                     "a"
                     "\x00\x00\x00\x00" /* n = 0: every record */
                     "\x00"
                     "\x00\x00\x00\x00");
    buf_clear(&b);
}

/* The records of the RECS and DROP examples: a value, then a tombstone given a value anyway
 * (a tombstone's value is never written). */
#define REC1_BYTES                                     \
    "\x01\x00\x00\x00"                                 \
    "k"                                /* key */       \
    "\x00"                             /* tombstone */ \
    "\x02\x01\x00\x00\x00\x00\x00\x00" /* ts */        \
    "\x00\x01\x02\x03\x04\x05\x06\x07" /* op_id */     \
    "\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"                 \
    "\x01\x00\x00\x00" /* value_len */                 \
    "v"
#define REC2_BYTES                                                     \
    "\x01\x00\x00\x00"                                                 \
    "z"                                                                \
    "\x01"                                                             \
    "\x20\x00\x00\x00\x00\x00\x00\x00"                                 \
    "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" \
    "\x00\x00\x00\x00"

static void example_recs(struct buf *recs)
{
    struct store_rec r1 = mk_live("k", "v", 0x0102);
    struct store_rec r2 = mk_rec("z", 1, "ignored", 7, true, 0x20, OPID_B);
    ae_msg_put_rec(recs, &r1);
    ae_msg_put_rec(recs, &r2);
}

TEST(exact_bytes_recs)
{
    struct buf b, recs;
    buf_init(&b);
    buf_init(&recs);
    example_recs(&recs);
    ae_msg_put_recs(&b, 7, "n1", AE_MSG_F_MORE | AE_MSG_F_PUSH, (const uint8_t *) "z", 1, 2,
                    recs.data, recs.len);
    EXPECT_BYTES(&b, "AE"
                     "\x01"
                     "\x04" /* RECS */
                     "\x07\x00\x00\x00\x00\x00\x00\x00"
                     "\x02"
                     "n1"
                     "\x03"             /* flags: more, push */
                     "\x01\x00\x00\x00" /* after_len */
                     "z"
                     "\x02\x00\x00\x00" /* count */
                 REC1_BYTES REC2_BYTES);
    buf_clear(&b);
    buf_clear(&recs);
}

TEST(exact_bytes_drop)
{
    struct buf b, recs;
    buf_init(&b);
    buf_init(&recs);
    example_recs(&recs);
    ae_msg_put_drop(&b, "b", 2, recs.data, recs.len);
    EXPECT_BYTES(&b, "AE"
                     "\x01"
                     "\x05"                             /* DROP */
                     "\x00\x00\x00\x00\x00\x00\x00\x00" /* session 0 */
                     "\x01"
                     "b"
                     "\x02\x00\x00\x00" /* count */
                 REC1_BYTES REC2_BYTES);
    buf_clear(&b);
    buf_clear(&recs);
}

/* ---- round trips ---- */

static void open_ok(struct ae_msg *m, const struct buf *b, enum ae_msg_type type, uint64_t sid,
                    const char *from)
{
    ASSERT_OK(ae_msg_open(m, b->data, b->len));
    ASSERT_EQ(m->type, type);
    ASSERT_U64_EQ(m->sid, sid);
    ASSERT_STR_EQ(m->from, from);
}

TEST(round_trip_header)
{
    struct buf b;
    buf_init(&b);
    char id255[AE_MSG_FROM_MAX + 1], id300[301];
    memset(id255, 'x', sizeof(id255) - 1);
    id255[sizeof(id255) - 1] = '\0';
    memset(id300, 'x', sizeof(id300) - 1);
    id300[sizeof(id300) - 1] = '\0';
    const uint64_t sids[] = { 0, 1, 0x8000000000000000u, UINT64_MAX };
    const char *ids[] = { "a", "node-1", "n\xc5\x93ud.2_x", id255 };
    struct ae_msg m;
    for (size_t i = 0; i < sizeof(sids) / sizeof(sids[0]); i++)
        for (size_t j = 0; j < sizeof(ids) / sizeof(ids[0]); j++) {
            ae_msg_put_nodes_req(&b, sids[i], ids[j], 0, NULL, 0);
            open_ok(&m, &b, AE_MSG_NODES_REQ, sids[i], ids[j]);
            ASSERT_EQ(m.body_len, 5);
            ASSERT(m.body == b.data + b.len - 5);
        }
    /* an id longer than a u8 can count is cut (conf never allows one) */
    ae_msg_put_nodes_req(&b, 3, id300, 0, NULL, 0);
    open_ok(&m, &b, AE_MSG_NODES_REQ, 3, id255);
    buf_clear(&b);
}

TEST(round_trip_nodes_req)
{
    struct buf b;
    buf_init(&b);
    static uint32_t idx[AE_MAX_NODES_REQ];
    for (uint32_t i = 0; i < AE_MAX_NODES_REQ; i++)
        idx[i] = i * 2654435761u;
    idx[1] = UINT32_MAX;
    const size_t ns[] = { 0, 1, 3, AE_MAX_NODES_REQ };
    const unsigned levels[] = { 0, 3, 255 };
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++)
        for (size_t j = 0; j < sizeof(levels) / sizeof(levels[0]); j++) {
            ae_msg_put_nodes_req(&b, 42 + i, "n1", levels[j], idx, ns[i]);
            struct ae_msg m;
            struct ae_msg_nodes_req q;
            open_ok(&m, &b, AE_MSG_NODES_REQ, 42 + i, "n1");
            ASSERT_OK(ae_msg_get_nodes_req(&m, &q));
            ASSERT_EQ(q.level, levels[j]);
            ASSERT_EQ(q.n, ns[i]);
            for (uint32_t k = 0; k < q.n; k++)
                ASSERT_U64_EQ(ae_msg_nodes_req_index(&q, k), idx[k]);
            EXPECT_OK(&b);
        }
    buf_clear(&b);
}

static uint8_t digest_byte(uint32_t entry, unsigned k, unsigned byte)
{
    return (uint8_t) (entry * 131 + k * 7 + byte);
}

TEST(round_trip_nodes)
{
    struct buf b;
    buf_init(&b);
    const unsigned shapes[][2] = { { 2, 1 }, { 16, 4 }, { 256, 8 }, { 65535, 255 } };
    const uint32_t ns[] = { 0, 1, 5 };
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
            unsigned f = shapes[s][0], d = shapes[s][1];
            ae_msg_put_nodes(&b, UINT64_MAX - s, "peer", f, d, d - 1, ns[i]);
            for (uint32_t e = 0; e < ns[i]; e++) {
                uint8_t *dg = ae_msg_put_nodes_entry(&b, e == 1 ? UINT32_MAX : e * 3, f);
                for (unsigned k = 0; k < f; k++)
                    for (unsigned x = 0; x < AE_MSG_DIGEST_LEN; x++) {
                        ASSERT_EQ(dg[(size_t) k * AE_MSG_DIGEST_LEN + x], 0); /* zeroed */
                        dg[(size_t) k * AE_MSG_DIGEST_LEN + x] = digest_byte(e, k, x);
                    }
            }
            struct ae_msg m;
            struct ae_msg_nodes a;
            open_ok(&m, &b, AE_MSG_NODES, UINT64_MAX - s, "peer");
            ASSERT_OK(ae_msg_get_nodes(&m, &a));
            ASSERT_EQ(a.fanout, f);
            ASSERT_EQ(a.depth, d);
            ASSERT_EQ(a.level, d - 1);
            ASSERT_EQ(a.n, ns[i]);
            for (uint32_t e = 0; e < a.n; e++) {
                const uint8_t *dg;
                ASSERT_U64_EQ(ae_msg_nodes_entry(&a, e, &dg), e == 1 ? UINT32_MAX : e * 3);
                for (unsigned k = 0; k < f; k++)
                    for (unsigned x = 0; x < AE_MSG_DIGEST_LEN; x++)
                        ASSERT_EQ(dg[(size_t) k * AE_MSG_DIGEST_LEN + x], digest_byte(e, k, x));
            }
            EXPECT_OK(&b);
        }
    buf_clear(&b);
}

TEST(round_trip_recs_req)
{
    struct buf b;
    buf_init(&b);
    static uint32_t leaves[AE_MAX_LEAVES_REQ];
    for (uint32_t i = 0; i < AE_MAX_LEAVES_REQ; i++)
        leaves[i] = i * 40503u;
    leaves[0] = UINT32_MAX;
    static const uint8_t key[] = { 'k', 0, 0xff, '\n', ' ' };
    struct {
        uint32_t n;
        const uint8_t *after;
        size_t after_len;
        bool has_after;
    } cases[] = {
        { 0, NULL, 0, false },               /* every record, from the start */
        { 0, key, sizeof(key), true },       /* every record, after a key */
        { 3, key, 1, true },                 /* some buckets, after a key */
        { 1, key, 0, true },                 /* after the empty key */
        { 2, key, sizeof(key), false },      /* a cursor sent without has_after */
        { AE_MAX_LEAVES_REQ, key, 2, true }, /* as many buckets as allowed */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ae_recs_req(i, "n2", leaves, cases[i].n, cases[i].after, cases[i].after_len,
                    cases[i].has_after, &b);
        struct ae_msg m;
        struct ae_msg_recs_req q;
        open_ok(&m, &b, AE_MSG_RECS_REQ, i, "n2");
        ASSERT_OK(ae_msg_get_recs_req(&m, &q));
        ASSERT_EQ(q.n, cases[i].n);
        for (uint32_t k = 0; k < q.n; k++)
            ASSERT_U64_EQ(ae_msg_recs_req_leaf(&q, k), leaves[k]);
        ASSERT_EQ(q.has_after, cases[i].has_after);
        ASSERT_EQ(q.after.len, cases[i].after_len);
        if (q.after.len) ASSERT_MEM_EQ(q.after.p, cases[i].after, q.after.len);
        EXPECT_OK(&b);
    }
    buf_clear(&b);
}

/* A page of records of every kind: live, tombstone, empty key and value, binary, large. */
static size_t sample_recs(struct store_rec *out, uint8_t *big, size_t big_len)
{
    static const uint8_t bin_key[] = { 0, 1, 0xfe, 0xff, '\r', '\n' };
    static const uint8_t bin_val[] = { 0, 0, 0x80 };
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t) (i * 7 + 1);
    size_t n = 0;
    out[n++] = mk_live("alpha", "one", 1);
    out[n++] = mk_tomb("beta", 0x0102030405060708u);
    out[n++] = mk_rec("", 0, "", 0, false, 0, OPID_A);
    out[n++] = mk_rec("e", 1, NULL, 0, false, UINT64_MAX, OPID_B);
    out[n++] = mk_rec(bin_key, sizeof(bin_key), bin_val, sizeof(bin_val), false, 77, OPID_B);
    out[n++] = mk_rec("big", 3, big, big_len, false, 78, OPID_A);
    out[n++] = mk_rec("t", 1, "dropped", 7, true, 79, OPID_A); /* a tombstone's value is not sent */
    return n;
}

static void expect_page(struct ae_recs *r, const struct store_rec *want, size_t n)
{
    ASSERT_EQ(r->count, n);
    struct store_rec got;
    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ(r->done, i);
        ASSERT_EQ(ae_recs_next(r, &got), 1);
        expect_same_rec(&got, &want[i]);
    }
    ASSERT_EQ(ae_recs_next(r, &got), 0);
    ASSERT_EQ(ae_recs_next(r, &got), 0); /* stays at the end */
    ASSERT_EQ(r->done, n);
}

TEST(round_trip_recs)
{
    struct buf b, recs;
    buf_init(&b);
    buf_init(&recs);
    static uint8_t big[100 * 1024];
    struct store_rec want[8];
    size_t nrec = sample_recs(want, big, sizeof(big));
    const unsigned flag_sets[] = { 0, AE_MSG_F_MORE, AE_MSG_F_PUSH, AE_MSG_F_MORE | AE_MSG_F_PUSH };
    static const uint8_t after[] = { 'z', 0, 'z' };
    for (size_t n = 0; n <= nrec; n++)
        for (size_t fi = 0; fi < sizeof(flag_sets) / sizeof(flag_sets[0]); fi++) {
            unsigned flags = flag_sets[fi];
            size_t after_len = (flags & AE_MSG_F_MORE) ? sizeof(after) : 0;
            buf_reset(&recs);
            for (size_t i = 0; i < n; i++)
                ae_msg_put_rec(&recs, &want[i]);
            ae_msg_put_recs(&b, 1000 + n, "n3", flags, after, after_len, (uint32_t) n, recs.data,
                            recs.len);
            struct ae_msg m;
            struct ae_recs r;
            open_ok(&m, &b, AE_MSG_RECS, 1000 + n, "n3");
            ASSERT_OK(ae_msg_get_recs(&m, &r));
            ASSERT_EQ(r.more, (flags & AE_MSG_F_MORE) != 0);
            ASSERT_EQ(r.push, (flags & AE_MSG_F_PUSH) != 0);
            ASSERT_EQ(r.after.len, after_len);
            if (after_len) ASSERT_MEM_EQ(r.after.p, after, after_len);
            expect_page(&r, want, n);
            /* the same through ae_recs_open, which SYNC uses */
            ASSERT_OK(ae_recs_open(&r, 1000 + n, b.data, b.len));
            ASSERT_EQ(r.more, (flags & AE_MSG_F_MORE) != 0);
            expect_page(&r, want, n);
            EXPECT_OK(&b);
        }
    buf_clear(&b);
    buf_clear(&recs);
}

TEST(round_trip_drop)
{
    struct buf b, recs;
    buf_init(&b);
    buf_init(&recs);
    static uint8_t big[4096];
    struct store_rec want[8];
    size_t nrec = sample_recs(want, big, sizeof(big));
    for (size_t n = 0; n <= nrec; n++) {
        buf_reset(&recs);
        for (size_t i = 0; i < n; i++)
            ae_msg_put_rec(&recs, &want[i]);
        ae_msg_put_drop(&b, "n4", (uint32_t) n, recs.data, recs.len);
        struct ae_msg m;
        struct ae_recs r;
        open_ok(&m, &b, AE_MSG_DROP, 0, "n4");
        ASSERT_OK(ae_msg_get_drop(&m, &r));
        ASSERT(!r.more && !r.push && r.after.len == 0);
        expect_page(&r, want, n);
        EXPECT_OK(&b);
    }
    buf_clear(&b);
    buf_clear(&recs);
}

TEST(recs_open_checks_type_and_session)
{
    struct buf b, recs;
    buf_init(&b);
    buf_init(&recs);
    example_recs(&recs);
    struct ae_recs r;
    ae_msg_put_recs(&b, 5, "n1", 0, NULL, 0, 2, recs.data, recs.len);
    ASSERT_OK(ae_recs_open(&r, 5, b.data, b.len));
    ASSERT_EQ(ae_recs_open(&r, 6, b.data, b.len), -EBADMSG);
    ae_msg_put_drop(&b, "n1", 2, recs.data, recs.len);
    ASSERT_EQ(ae_recs_open(&r, 0, b.data, b.len), -EBADMSG); /* a DROP is not a page */
    ae_msg_put_nodes_req(&b, 5, "n1", 0, NULL, 0);
    ASSERT_EQ(ae_recs_open(&r, 5, b.data, b.len), -EBADMSG);
    buf_clear(&b);
    buf_clear(&recs);
}

/* ---- truncation and leftovers ---- */

/* One non-trivial message of every type, appended one after the other to msgs[0..5). */
static void sample_messages(struct buf msgs[5])
{
    const uint32_t idx[3] = { 0, 5, UINT32_MAX };
    ae_msg_put_nodes_req(&msgs[0], 11, "n1", 2, idx, 3);
    ae_msg_put_nodes(&msgs[1], 12, "n2", 4, 2, 1, 2);
    for (uint32_t e = 0; e < 2; e++)
        memset(ae_msg_put_nodes_entry(&msgs[1], e + 4, 4), (int) (0xa0 + e), 4 * AE_MSG_DIGEST_LEN);
    ae_recs_req(13, "n3", idx, 3, (const uint8_t *) "cursor", 6, true, &msgs[2]);
    struct buf recs;
    buf_init(&recs);
    example_recs(&recs);
    struct store_rec e = mk_rec("", 0, "", 0, false, 0, OPID_A);
    ae_msg_put_rec(&recs, &e);
    ae_msg_put_recs(&msgs[3], 14, "n4", AE_MSG_F_MORE, (const uint8_t *) "", 0, 3, recs.data,
                    recs.len);
    ae_msg_put_drop(&msgs[4], "n5", 3, recs.data, recs.len);
    buf_clear(&recs);
}

TEST(truncated_every_type_rejected)
{
    struct buf msgs[5];
    for (int i = 0; i < 5; i++)
        buf_init(&msgs[i]);
    sample_messages(msgs);
    for (int i = 0; i < 5; i++) {
        EXPECT_TRUNCATIONS_BAD(&msgs[i]);
        buf_clear(&msgs[i]);
    }
    /* the bare header of every type, and of no type at all */
    struct buf b;
    buf_init(&b);
    for (unsigned t = AE_MSG_NODES_REQ; t <= AE_MSG_DROP; t++) {
        h_header(&b, t, 1, "n1");
        EXPECT_BAD(&b);
    }
    buf_clear(&b);
    ASSERT_EQ(decode_whole(NULL, 0), -EBADMSG);
}

/* ---- counts and lengths that claim too much ---- */

TEST(oversized_nodes_req)
{
    struct buf b;
    buf_init(&b);
    /* at the limit: fine; one more, every index present: rejected */
    for (uint32_t n = AE_MAX_NODES_REQ; n <= AE_MAX_NODES_REQ + 1; n++) {
        h_header(&b, AE_MSG_NODES_REQ, 1, "n1");
        h_le(&b, 0, 1);
        h_le(&b, n, 4);
        for (uint32_t i = 0; i < n; i++)
            h_le(&b, i, 4);
        if (n == AE_MAX_NODES_REQ)
            EXPECT_OK(&b);
        else
            EXPECT_BAD(&b);
    }
    /* more indexes claimed than present */
    const uint32_t claims[] = { 3, AE_MAX_NODES_REQ, UINT32_MAX };
    for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
        h_header(&b, AE_MSG_NODES_REQ, 1, "n1");
        h_le(&b, 0, 1);
        h_le(&b, claims[i], 4);
        h_le(&b, 1, 4);
        h_le(&b, 2, 4);
        EXPECT_BAD(&b);
    }
    buf_clear(&b);
}

TEST(oversized_nodes)
{
    struct buf b;
    buf_init(&b);
    uint8_t dg[2 * AE_MSG_DIGEST_LEN] = { 0 };
    for (uint32_t n = AE_MAX_NODES_REQ; n <= AE_MAX_NODES_REQ + 1; n++) {
        h_header(&b, AE_MSG_NODES, 1, "n1");
        h_le(&b, 2, 2);
        h_le(&b, 4, 1);
        h_le(&b, 3, 1);
        h_le(&b, n, 4);
        for (uint32_t i = 0; i < n; i++) {
            h_le(&b, i, 4);
            h_raw(&b, dg, sizeof(dg));
        }
        if (n == AE_MAX_NODES_REQ)
            EXPECT_OK(&b);
        else
            EXPECT_BAD(&b);
    }
    /* (fanout, n) claiming more than the one entry of two digests present */
    const unsigned claims[][2] = { { 2, 2 },     { 3, 1 },          { 16, 1 },
                                   { 65535, 1 }, { 2, UINT32_MAX }, { 65535, UINT32_MAX },
                                   { 1, 1 },     { 0, 1 } };
    for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
        h_header(&b, AE_MSG_NODES, 1, "n1");
        h_le(&b, claims[i][0], 2);
        h_le(&b, 4, 1);
        h_le(&b, 3, 1);
        h_le(&b, claims[i][1], 4);
        h_le(&b, 9, 4);
        h_raw(&b, dg, sizeof(dg));
        EXPECT_BAD(&b);
    }
    buf_clear(&b);
}

TEST(oversized_recs_req)
{
    struct buf b;
    buf_init(&b);
    for (uint32_t n = AE_MAX_LEAVES_REQ; n <= AE_MAX_LEAVES_REQ + 1; n++) {
        h_header(&b, AE_MSG_RECS_REQ, 1, "n1");
        h_le(&b, n, 4);
        for (uint32_t i = 0; i < n; i++)
            h_le(&b, i, 4);
        h_le(&b, 0, 1);
        h_le(&b, 0, 4);
        if (n == AE_MAX_LEAVES_REQ)
            EXPECT_OK(&b);
        else
            EXPECT_BAD(&b);
    }
    /* n claiming more leaves than present */
    const uint32_t claims[] = { 2, AE_MAX_LEAVES_REQ, UINT32_MAX };
    for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
        h_header(&b, AE_MSG_RECS_REQ, 1, "n1");
        h_le(&b, claims[i], 4);
        h_le(&b, 7, 4);
        h_le(&b, 0, 1);
        h_le(&b, 0, 4);
        EXPECT_BAD(&b);
    }
    /* after_len claiming more than present */
    const uint32_t lens[] = { 4, 5, UINT32_MAX };
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        h_header(&b, AE_MSG_RECS_REQ, 1, "n1");
        h_le(&b, 0, 4);
        h_le(&b, 1, 1);
        h_le(&b, lens[i], 4);
        h_raw(&b, "abc", 3);
        EXPECT_BAD(&b);
    }
    buf_clear(&b);
}

/* A RECS header and body up to the count: flags, cursor "c". */
static void h_recs_head(struct buf *b, uint32_t count)
{
    h_header(b, AE_MSG_RECS, 1, "n1");
    h_le(b, AE_MSG_F_MORE, 1);
    h_le(b, 1, 4);
    h_raw(b, "c", 1);
    h_le(b, count, 4);
}

TEST(oversized_recs)
{
    struct buf b;
    buf_init(&b);
    struct ae_msg m;
    struct ae_recs r;
    /* counts claiming more records than present: refused before any record is read when they
     * cannot fit, else when ae_recs_next reaches the missing one */
    const uint32_t counts[] = { 2, 3, 1000, UINT32_MAX };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        h_recs_head(&b, counts[i]);
        h_rec(&b, "k", 0, 1, OPID_A, 1, "v");
        EXPECT_BAD(&b);
        ASSERT_OK(ae_msg_open(&m, b.data, b.len));
        ASSERT_EQ(ae_msg_get_recs(&m, &r), -EBADMSG);
    }
    h_recs_head(&b, 2);
    h_rec(&b, "k", 0, 1, OPID_A, 40, "0123456789012345678901234567890123456789");
    ASSERT_OK(ae_msg_open(&m, b.data, b.len));
    ASSERT_OK(ae_msg_get_recs(&m, &r)); /* 2 records might fit in these bytes */
    struct store_rec rec;
    ASSERT_EQ(ae_recs_next(&r, &rec), 1);
    ASSERT_EQ(ae_recs_next(&r, &rec), -EBADMSG);
    /* fewer claimed than present: the rest is left over */
    h_recs_head(&b, 1);
    h_rec(&b, "k", 0, 1, OPID_A, 1, "v");
    h_rec(&b, "l", 0, 1, OPID_A, 1, "w");
    EXPECT_BAD(&b);
    /* the cursor's length */
    const uint32_t after_lens[] = { 2, 100, UINT32_MAX };
    for (size_t i = 0; i < sizeof(after_lens) / sizeof(after_lens[0]); i++) {
        h_header(&b, AE_MSG_RECS, 1, "n1");
        h_le(&b, 0, 1);
        h_le(&b, after_lens[i], 4);
        h_raw(&b, "c", 1);
        h_le(&b, 0, 4);
        EXPECT_BAD(&b);
    }
    /* a record's key and value lengths */
    const uint32_t lens[] = { 2, 1000, UINT32_MAX };
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        h_recs_head(&b, 1);
        h_le(&b, lens[i], 4); /* key_len */
        h_raw(&b, "k", 1);
        h_le(&b, 0, 1);
        h_le(&b, 1, 8);
        h_raw(&b, OPID_A, STORE_OP_ID_BYTES);
        h_le(&b, 0, 4);
        EXPECT_BAD(&b);
        h_recs_head(&b, 1);
        h_rec(&b, "k", 0, 1, OPID_A, lens[i], "v"); /* value_len */
        EXPECT_BAD(&b);
    }
    buf_clear(&b);
}

TEST(oversized_drop)
{
    struct buf b;
    buf_init(&b);
    const uint32_t counts[] = { 2, 1000, UINT32_MAX };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        h_header(&b, AE_MSG_DROP, 0, "n1");
        h_le(&b, counts[i], 4);
        h_rec(&b, "k", 0, 1, OPID_A, 1, "v");
        EXPECT_BAD(&b);
    }
    h_header(&b, AE_MSG_DROP, 0, "n1");
    h_le(&b, 1, 4);
    h_rec(&b, "k", 0, 1, OPID_A, 1, "v");
    EXPECT_OK(&b);
    h_rec(&b, "k", 0, 1, OPID_A, 1, "v"); /* one record more than counted */
    EXPECT_BAD(&b);
    buf_clear(&b);
}

/* ---- the header ---- */

/* A valid NODES_REQ body (n = 0) after a header with the given fields. */
static void h_any_nodes_req(struct buf *b, const char *magic, unsigned version, unsigned type,
                            const void *from, size_t from_len)
{
    h_header_any(b, magic, version, type, 1, from, from_len);
    h_le(b, 0, 1);
    h_le(b, 0, 4);
}

TEST(header_rejects)
{
    struct buf b;
    buf_init(&b);
    h_any_nodes_req(&b, "AE", 1, AE_MSG_NODES_REQ, "n1", 2);
    EXPECT_OK(&b);
    /* unknown types, with the body of a known one */
    const unsigned types[] = { 0, 6, 7, 0x41, 255 };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        h_any_nodes_req(&b, "AE", 1, types[i], "n1", 2);
        EXPECT_BAD(&b);
    }
    /* magic and version */
    const char *magics[] = { "ae", "EA", "AF", "\0\0" };
    for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++) {
        h_any_nodes_req(&b, magics[i], 1, AE_MSG_NODES_REQ, "n1", 2);
        EXPECT_BAD(&b);
    }
    const unsigned versions[] = { 0, 2, 255 };
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        h_any_nodes_req(&b, "AE", versions[i], AE_MSG_NODES_REQ, "n1", 2);
        EXPECT_BAD(&b);
    }
    /* sender ids: empty, or with a NUL or an MQTT topic character */
    h_any_nodes_req(&b, "AE", 1, AE_MSG_NODES_REQ, "", 0);
    EXPECT_BAD(&b);
    const char *ids[] = { "a/b", "a+", "#",
                          "n\0"
                          "1",
                          "/" };
    const size_t id_lens[] = { 3, 2, 1, 3, 1 };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        h_any_nodes_req(&b, "AE", 1, AE_MSG_NODES_REQ, ids[i], id_lens[i]);
        EXPECT_BAD(&b);
    }
    /* from_len claiming more than the whole message */
    h_header_any(&b, "AE", 1, AE_MSG_NODES_REQ, 1, "n1", 2);
    b.data[12] = 200;
    EXPECT_BAD(&b);
    buf_clear(&b);
}

TEST(body_decoders_check_the_type)
{
    struct buf msgs[5];
    for (int i = 0; i < 5; i++)
        buf_init(&msgs[i]);
    sample_messages(msgs);
    for (int i = 0; i < 5; i++) {
        struct ae_msg m;
        ASSERT_OK(ae_msg_open(&m, msgs[i].data, msgs[i].len));
        ASSERT_EQ(m.type, AE_MSG_NODES_REQ + i);
        struct ae_msg_nodes_req q;
        struct ae_msg_nodes a;
        struct ae_msg_recs_req rq;
        struct ae_recs r;
        ASSERT_EQ(ae_msg_get_nodes_req(&m, &q), m.type == AE_MSG_NODES_REQ ? 0 : -EBADMSG);
        ASSERT_EQ(ae_msg_get_nodes(&m, &a), m.type == AE_MSG_NODES ? 0 : -EBADMSG);
        ASSERT_EQ(ae_msg_get_recs_req(&m, &rq), m.type == AE_MSG_RECS_REQ ? 0 : -EBADMSG);
        ASSERT_EQ(ae_msg_get_recs(&m, &r), m.type == AE_MSG_RECS ? 0 : -EBADMSG);
        ASSERT_EQ(ae_msg_get_drop(&m, &r), m.type == AE_MSG_DROP ? 0 : -EBADMSG);
        buf_clear(&msgs[i]);
    }
}

/* ---- flags and records ---- */

TEST(flags_and_records_rejects)
{
    struct buf b;
    buf_init(&b);
    /* RECS flags other than more and push */
    const unsigned flags[] = { 4, 5, 0x80, 0xff };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        h_header(&b, AE_MSG_RECS, 1, "n1");
        h_le(&b, flags[i], 1);
        h_le(&b, 0, 4);
        h_le(&b, 0, 4);
        EXPECT_BAD(&b);
    }
    /* RECS_REQ has_after other than 0 or 1 */
    for (unsigned has_after = 0; has_after < 4; has_after++) {
        h_header(&b, AE_MSG_RECS_REQ, 1, "n1");
        h_le(&b, 0, 4);
        h_le(&b, has_after, 1);
        h_le(&b, 0, 4);
        if (has_after <= 1)
            EXPECT_OK(&b);
        else
            EXPECT_BAD(&b);
    }
    /* a tombstone flag other than 0 or 1; a tombstone with a value */
    for (unsigned tomb = 0; tomb < 4; tomb++) {
        h_recs_head(&b, 1);
        h_rec(&b, "k", tomb, 1, OPID_A, 0, NULL);
        if (tomb <= 1)
            EXPECT_OK(&b);
        else
            EXPECT_BAD(&b);
    }
    h_recs_head(&b, 1);
    h_rec(&b, "k", 1, 1, OPID_A, 1, "v");
    EXPECT_BAD(&b);
    h_header(&b, AE_MSG_DROP, 0, "n1");
    h_le(&b, 1, 4);
    h_rec(&b, "k", 1, 1, OPID_A, 1, "v");
    EXPECT_BAD(&b);
    buf_clear(&b);
}

/* ---- mutations ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1du;

static uint64_t rng(void)
{
    /* xorshift64*: deterministic across runs and platforms */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

TEST(mutations_never_crash)
{
    struct buf msgs[5], mut;
    for (int i = 0; i < 5; i++)
        buf_init(&msgs[i]);
    buf_init(&mut);
    sample_messages(msgs);
    size_t ok = 0, bad = 0;
    for (int round = 0; round < 20000; round++) {
        const struct buf *src = &msgs[round % 5];
        buf_reset(&mut);
        h_raw(&mut, src->data, src->len);
        int edits = 1 + (int) (rng() % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t) (rng() % mut.len);
            switch (rng() % 5) {
            case 0:
                mut.data[at] ^= (uint8_t) (1u << (rng() % 8));
                break;
            case 1:
                mut.data[at] = 0;
                break;
            case 2:
                mut.data[at] = 0xff;
                break;
            case 3:
                mut.data[at] = (uint8_t) rng();
                break;
            default:
                buf_truncate(&mut, at + 1);
                break;
            }
        }
        if (decode_whole(mut.data, mut.len) == 0)
            ok++;
        else
            bad++;
    }
    ASSERT(ok > 0 && bad > 0);
    for (int i = 0; i < 2000; i++) { /* random bytes behind a valid magic and version */
        buf_reset(&mut);
        h_raw(&mut, "AE\x01", 3);
        size_t n = (size_t) (rng() % 64);
        for (size_t k = 0; k < n; k++)
            h_le(&mut, rng(), 1);
        (void) decode_whole(mut.data, mut.len);
    }
    for (int i = 0; i < 5; i++)
        buf_clear(&msgs[i]);
    buf_clear(&mut);
}

TEST_LIST{
    TEST_ENTRY(exact_bytes_nodes_req),
    TEST_ENTRY(exact_bytes_nodes),
    TEST_ENTRY(exact_bytes_recs_req),
    TEST_ENTRY(exact_bytes_recs),
    TEST_ENTRY(exact_bytes_drop),
    TEST_ENTRY(round_trip_header),
    TEST_ENTRY(round_trip_nodes_req),
    TEST_ENTRY(round_trip_nodes),
    TEST_ENTRY(round_trip_recs_req),
    TEST_ENTRY(round_trip_recs),
    TEST_ENTRY(round_trip_drop),
    TEST_ENTRY(recs_open_checks_type_and_session),
    TEST_ENTRY(truncated_every_type_rejected),
    TEST_ENTRY(oversized_nodes_req),
    TEST_ENTRY(oversized_nodes),
    TEST_ENTRY(oversized_recs_req),
    TEST_ENTRY(oversized_recs),
    TEST_ENTRY(oversized_drop),
    TEST_ENTRY(header_rejects),
    TEST_ENTRY(body_decoders_check_the_type),
    TEST_ENTRY(flags_and_records_rejects),
    TEST_ENTRY(mutations_never_crash),
};

TEST_MAIN()
