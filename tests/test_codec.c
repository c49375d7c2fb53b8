/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for codec: CBOR change events (replication.md §2).
 *
 * Round trips of every op on both wires, binary and large keys/values, batches, MerkleKV-style
 * payloads built by hand, one exact byte sequence, every rejection class (each checked for
 * -EBADMSG, an emptied batch and a one-line reason), deep nesting and huge declared lengths, and a
 * deterministic fuzz loop of random and mutated payloads. Hand-built payloads use libcbor's
 * encoding primitives directly (the w_* helpers), independent of the encoder under test.
 */
#include "arborkv/codec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cbor.h>

#include "arborkv/buf.h"
#include "harness.h"

/* ---- writing CBOR by hand ---- */

typedef size_t head_fn(size_t n, unsigned char *out, size_t cap);

static void w_head(struct buf *b, head_fn *fn, size_t n)
{
    buf_reserve(b, 9);
    size_t w = fn(n, b->data + b->len, b->cap - b->len);
    ASSERT(w > 0);
    b->len += w;
}

static void w_raw(struct buf *b, const void *p, size_t n)
{
    buf_append(b, p, n);
}

static void w_map(struct buf *b, size_t n)
{
    w_head(b, cbor_encode_map_start, n);
}

static void w_arr(struct buf *b, size_t n)
{
    w_head(b, cbor_encode_array_start, n);
}

static void w_uint(struct buf *b, uint64_t v)
{
    buf_reserve(b, 9);
    b->len += cbor_encode_uint(v, b->data + b->len, b->cap - b->len);
}

static void w_textn(struct buf *b, const void *p, size_t n)
{
    w_head(b, cbor_encode_string_start, n);
    w_raw(b, p, n);
}

static void w_text(struct buf *b, const char *s)
{
    w_textn(b, s, strlen(s));
}

static void w_bytes(struct buf *b, const void *p, size_t n)
{
    w_head(b, cbor_encode_bytestring_start, n);
    w_raw(b, p, n);
}

static void w_null(struct buf *b)
{
    w_raw(b, "\xf6", 1);
}

static void w_uint_array(struct buf *b, const uint8_t *p, size_t n)
{
    w_arr(b, n);
    for (size_t i = 0; i < n; i++)
        w_uint(b, p[i]);
}

static const uint8_t OPID[CODEC_OP_ID_LEN] = { 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                               0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff };

/*
 * Writes the head of a standard "set" event map and its fields (v op key val ts src op_id, with
 * op "set", key "k", val "hello", ts 42, src "n1", op_id OPID), leaving out the fields listed in
 * omit (",name," form) and counting `extra` entries that the caller writes right after.
 */
static void std_event(struct buf *b, const char *omit, size_t extra)
{
    static const char *const names[] = { "v", "op", "key", "val", "ts", "src", "op_id" };
    bool keep[7];
    size_t n = 0;
    for (size_t i = 0; i < 7; i++) {
        char pat[16];
        snprintf(pat, sizeof(pat), ",%s,", names[i]);
        keep[i] = strstr(omit, pat) == NULL;
        n += keep[i];
    }
    w_map(b, n + extra);
    if (keep[0]) w_text(b, "v"), w_uint(b, 1);
    if (keep[1]) w_text(b, "op"), w_text(b, "set");
    if (keep[2]) w_text(b, "key"), w_text(b, "k");
    if (keep[3]) w_text(b, "val"), w_bytes(b, "hello", 5);
    if (keep[4]) w_text(b, "ts"), w_uint(b, 42);
    if (keep[5]) w_text(b, "src"), w_text(b, "n1");
    if (keep[6]) w_text(b, "op_id"), w_bytes(b, OPID, sizeof(OPID));
}

/* ---- checking decoder results ---- */

static bool inside(const void *p, size_t n, const void *base, size_t base_len)
{
    const uint8_t *q = p, *lo = base;
    return q && lo && q >= lo && (size_t) (q - lo) <= base_len && n <= base_len - (size_t) (q - lo);
}

/* Asserts what codec_decode promises of a successful result, whatever the payload. */
static void check_sane(const uint8_t *payload, size_t len, const struct codec_batch *b)
{
    ASSERT(b->n >= 1 && b->n <= CODEC_MAX_EVENTS && b->n <= b->cap);
    for (size_t i = 0; i < b->n; i++) {
        const struct codec_event *ev = &b->ev[i];
        ASSERT((unsigned) ev->op <= CODEC_OP_PREPEND);
        ASSERT(ev->key_len >= 1 && ev->key_len <= CODEC_MAX_KEY);
        ASSERT(inside(ev->key, ev->key_len, payload, len));
        ASSERT(ev->src_len >= 1 && ev->src_len <= CODEC_MAX_SRC);
        ASSERT(inside(ev->src, ev->src_len, payload, len));
        ASSERT(ev->has_val == (ev->op != CODEC_OP_DEL));
        if (!ev->has_val) ASSERT(ev->val == NULL && ev->val_len == 0);
        ASSERT(ev->val_len <= len);
        if (ev->val_len > 0)
            ASSERT(inside(ev->val, ev->val_len, payload, len) ||
                   inside(ev->val, ev->val_len, b->scratch.data, b->scratch.len));
    }
}

static void decode_ok_at(int at, const uint8_t *p, size_t len, struct codec_batch *b)
{
    char why[160];
    int rc = codec_decode(p, len, b, why, sizeof(why));
    if (rc != 0) {
        fprintf(stderr, "%s:%d: expected a valid payload, got rc %d: %s\n", __FILE__, at, rc, why);
        abort();
    }
    ASSERT_EQ(why[0], '\0');
    check_sane(p, len, b);
}
#define DECODE_OK(buf, batch) decode_ok_at(__LINE__, (buf)->data, (buf)->len, (batch))

/*
 * Decodes p, which must be rejected with a reason containing want (if not NULL). The batch first
 * holds a valid event, so "b->n == 0" shows a rejection resets it.
 */
static void expect_bad_at(int at, const uint8_t *p, size_t len, const char *want)
{
    struct codec_batch b;
    codec_batch_init(&b);
    struct buf good;
    buf_init(&good);
    std_event(&good, "", 0);
    char why[160];
    ASSERT_OK(codec_decode(good.data, good.len, &b, why, sizeof(why)));
    ASSERT_EQ(b.n, 1);
    memset(why, 'x', sizeof(why));
    int rc = codec_decode(p, len, &b, why, sizeof(why));
    bool ok = rc == -EBADMSG && b.n == 0 && memchr(why, '\0', sizeof(why)) && why[0] != '\0' &&
              !strchr(why, '\n') && (!want || strstr(why, want));
    if (!ok) {
        fprintf(stderr, "%s:%d: expected rejection with \"%s\", got rc %d, n %zu, why \"%.*s\"\n",
                __FILE__, at, want ? want : "", rc, b.n, (int) sizeof(why), why);
        abort();
    }
    buf_clear(&good);
    codec_batch_clear(&b);
}
#define EXPECT_BAD(buf, want) expect_bad_at(__LINE__, (buf)->data, (buf)->len, (want))
#define EXPECT_BAD_LIT(lit, want) \
    expect_bad_at(__LINE__, (const uint8_t *) (lit), sizeof(lit) - 1, (want))

static void expect_same_event(const struct codec_event *a, const struct codec_event *b)
{
    ASSERT_EQ(a->op, b->op);
    ASSERT_EQ(a->key_len, b->key_len);
    ASSERT_MEM_EQ(a->key, b->key, a->key_len);
    ASSERT_EQ(a->has_val, b->has_val);
    ASSERT_EQ(a->val_len, b->val_len);
    if (a->val_len) ASSERT_MEM_EQ(a->val, b->val, a->val_len);
    ASSERT_U64_EQ(a->ts, b->ts);
    ASSERT_EQ(a->src_len, b->src_len);
    ASSERT_MEM_EQ(a->src, b->src, a->src_len);
    ASSERT_MEM_EQ(a->op_id, b->op_id, CODEC_OP_ID_LEN);
}

static struct codec_event make_event(enum codec_op op, const void *key, size_t key_len,
                                     const void *val, size_t val_len, uint64_t ts, const char *src)
{
    struct codec_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.op = op;
    ev.key = key;
    ev.key_len = key_len;
    ev.has_val = op != CODEC_OP_DEL;
    ev.val = ev.has_val ? val : NULL;
    ev.val_len = ev.has_val ? val_len : 0;
    ev.ts = ts;
    ev.src = src;
    ev.src_len = strlen(src);
    for (size_t i = 0; i < CODEC_OP_ID_LEN; i++)
        ev.op_id[i] = (uint8_t) (ts * 31 + i * 7 + 1);
    return ev;
}

/* Encodes ev on wire, decodes it and compares. */
static void round_trip(const struct codec_event *ev, enum codec_wire wire)
{
    struct buf out;
    buf_init(&out);
    codec_encode_event(&out, ev, wire);
    struct codec_batch b;
    codec_batch_init(&b);
    DECODE_OK(&out, &b);
    ASSERT_EQ(b.n, 1);
    expect_same_event(ev, &b.ev[0]);
    /* Byte-string values borrow from the payload; MerkleKV arrays are copied to scratch. */
    if (ev->has_val && ev->val_len > 0) {
        if (wire == CODEC_WIRE_CBOR)
            ASSERT(inside(b.ev[0].val, ev->val_len, out.data, out.len));
        else
            ASSERT(inside(b.ev[0].val, ev->val_len, b.scratch.data, b.scratch.len));
    }
    codec_batch_clear(&b);
    buf_clear(&out);
}

/* ---- round trips ---- */

TEST(op_names)
{
    ASSERT_STR_EQ(codec_op_name(CODEC_OP_SET), "set");
    ASSERT_STR_EQ(codec_op_name(CODEC_OP_DEL), "del");
    ASSERT_STR_EQ(codec_op_name(CODEC_OP_INCR), "incr");
    ASSERT_STR_EQ(codec_op_name(CODEC_OP_DECR), "decr");
    ASSERT_STR_EQ(codec_op_name(CODEC_OP_APPEND), "append");
    ASSERT_STR_EQ(codec_op_name(CODEC_OP_PREPEND), "prepend");
}

TEST(round_trip_every_op_both_wires)
{
    for (int wire = CODEC_WIRE_CBOR; wire <= CODEC_WIRE_MERKLEKV; wire++) {
        for (int op = CODEC_OP_SET; op <= CODEC_OP_PREPEND; op++) {
            const uint64_t stamps[] = { 0,
                                        1,
                                        23,
                                        24,
                                        255,
                                        256,
                                        65535,
                                        65536,
                                        4294967295u,
                                        4294967296u,
                                        1700000000123456789u,
                                        UINT64_MAX };
            for (size_t i = 0; i < sizeof(stamps) / sizeof(stamps[0]); i++) {
                struct codec_event ev = make_event((enum codec_op) op, "user:1", 6, "42\x00\xff", 4,
                                                   stamps[i], "node-\xc3\xa9");
                round_trip(&ev, (enum codec_wire) wire);
            }
        }
    }
}

TEST(round_trip_binary_and_text_keys)
{
    const uint8_t bin[] = { 0xff, 0xfe, 0x00, 'a', 0xc0, 0x80 };
    const char *utf8 = "h\xc3\xa9llo \xf0\x9f\x98\x80";
    for (int wire = CODEC_WIRE_CBOR; wire <= CODEC_WIRE_MERKLEKV; wire++) {
        struct codec_event ev = make_event(CODEC_OP_SET, bin, sizeof(bin), "v", 1, 7, "n1");
        round_trip(&ev, (enum codec_wire) wire);
        ev = make_event(CODEC_OP_DEL, bin, sizeof(bin), NULL, 0, 7, "n1");
        round_trip(&ev, (enum codec_wire) wire);
        ev = make_event(CODEC_OP_SET, utf8, strlen(utf8), "v", 1, 7, "n1");
        round_trip(&ev, (enum codec_wire) wire);
    }
    /* Invalid UTF-8 goes out as a byte string (0x46), valid UTF-8 as text (0x6a). */
    struct buf out;
    buf_init(&out);
    struct codec_event ev = make_event(CODEC_OP_SET, bin, sizeof(bin), "v", 1, 7, "n1");
    codec_encode_event(&out, &ev, CODEC_WIRE_CBOR);
    const uint8_t *k = memmem(out.data, out.len, "\x63key", 4);
    ASSERT(k != NULL);
    ASSERT_EQ(k[4], 0x46);
    buf_reset(&out);
    ev = make_event(CODEC_OP_SET, utf8, strlen(utf8), "v", 1, 7, "n1");
    codec_encode_event(&out, &ev, CODEC_WIRE_CBOR);
    k = memmem(out.data, out.len, "\x63key", 4);
    ASSERT(k != NULL);
    ASSERT_EQ(k[4], 0x60 + strlen(utf8));
    /* Overlong, surrogate and out-of-range sequences are not UTF-8 either. */
    const char *bad[] = {
        "\xc0\xaf",  "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80",
        "a\xe2\x82", "\x80"
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        buf_reset(&out);
        ev = make_event(CODEC_OP_SET, bad[i], strlen(bad[i]), "v", 1, 7, "n1");
        codec_encode_event(&out, &ev, CODEC_WIRE_CBOR);
        k = memmem(out.data, out.len, "\x63key", 4);
        ASSERT(k != NULL);
        ASSERT_EQ(k[4], 0x40 + strlen(bad[i]));
        round_trip(&ev, CODEC_WIRE_CBOR);
    }
    buf_clear(&out);
}

TEST(round_trip_empty_values)
{
    for (int wire = CODEC_WIRE_CBOR; wire <= CODEC_WIRE_MERKLEKV; wire++) {
        struct codec_event ev = make_event(CODEC_OP_SET, "k", 1, "", 0, 9, "n1");
        round_trip(&ev, (enum codec_wire) wire);
        struct buf out;
        buf_init(&out);
        codec_encode_event(&out, &ev, (enum codec_wire) wire);
        struct codec_batch b;
        codec_batch_init(&b);
        DECODE_OK(&out, &b);
        ASSERT(b.ev[0].has_val);
        ASSERT_EQ(b.ev[0].val_len, 0);
        codec_batch_clear(&b);
        buf_clear(&out);
    }
}

TEST(round_trip_large_values)
{
    size_t n = 1024 * 1024;
    uint8_t *val = malloc(n);
    ASSERT(val != NULL);
    for (size_t i = 0; i < n; i++)
        val[i] = (uint8_t) (i * 2654435761u >> 13);
    for (int wire = CODEC_WIRE_CBOR; wire <= CODEC_WIRE_MERKLEKV; wire++) {
        struct codec_event ev = make_event(CODEC_OP_APPEND, "big", 3, val, n, 5, "n1");
        round_trip(&ev, (enum codec_wire) wire);
    }
    /* A key of exactly CODEC_MAX_KEY bytes is accepted. */
    uint8_t *key = malloc(CODEC_MAX_KEY);
    ASSERT(key != NULL);
    memset(key, 'k', CODEC_MAX_KEY);
    struct codec_event ev = make_event(CODEC_OP_SET, key, CODEC_MAX_KEY, "v", 1, 5, "n1");
    round_trip(&ev, CODEC_WIRE_CBOR);
    free(key);
    free(val);
}

TEST(round_trip_max_src)
{
    char src[CODEC_MAX_SRC + 1];
    memset(src, 's', CODEC_MAX_SRC);
    src[CODEC_MAX_SRC] = '\0';
    struct codec_event ev = make_event(CODEC_OP_SET, "k", 1, "v", 1, 5, src);
    round_trip(&ev, CODEC_WIRE_CBOR);
}

static void batch_round_trip(size_t n, enum codec_wire wire)
{
    struct codec_event *evs = calloc(n, sizeof(*evs));
    char(*keys)[32] = calloc(n, sizeof(*keys));
    ASSERT(evs && keys);
    struct buf out;
    buf_init(&out);
    codec_encode_batch_header(&out, n);
    for (size_t i = 0; i < n; i++) {
        int kl = snprintf(keys[i], sizeof(keys[i]), "key:%zu", i);
        enum codec_op op = (enum codec_op)(i % 6);
        evs[i] = make_event(op, keys[i], (size_t) kl, keys[i], (size_t) kl % 7, 1000 + i, "n2");
        codec_encode_event(&out, &evs[i], wire);
    }
    struct codec_batch b;
    codec_batch_init(&b);
    for (int again = 0; again < 2; again++) { /* storage is reused across calls */
        DECODE_OK(&out, &b);
        ASSERT_EQ(b.n, n);
        for (size_t i = 0; i < n; i++)
            expect_same_event(&evs[i], &b.ev[i]);
    }
    codec_batch_clear(&b);
    buf_clear(&out);
    free(keys);
    free(evs);
}

TEST(batch_of_1)
{
    batch_round_trip(1, CODEC_WIRE_CBOR);
    batch_round_trip(1, CODEC_WIRE_MERKLEKV);
}

TEST(batch_of_1000)
{
    batch_round_trip(1000, CODEC_WIRE_CBOR);
    batch_round_trip(1000, CODEC_WIRE_MERKLEKV);
}

TEST(batch_reuse_after_error_and_clear_is_null_safe)
{
    codec_batch_clear(NULL);
    struct codec_batch b;
    codec_batch_init(&b);
    codec_batch_clear(&b);
    codec_batch_clear(&b);
    struct buf ok;
    buf_init(&ok);
    std_event(&ok, "", 0);
    char why[128];
    ASSERT_EQ(codec_decode((const uint8_t *) "\x80", 1, &b, why, sizeof(why)), -EBADMSG);
    ASSERT_EQ(codec_decode(ok.data, ok.len, &b, NULL, 0), 0); /* why is optional */
    ASSERT_EQ(b.n, 1);
    ASSERT_EQ(codec_decode((const uint8_t *) "\x80", 1, &b, NULL, 0), -EBADMSG);
    ASSERT_EQ(b.n, 0);
    /* A short reason buffer still gets a NUL-terminated prefix. */
    ASSERT_EQ(codec_decode((const uint8_t *) "\x80", 1, &b, why, 4), -EBADMSG);
    ASSERT_EQ(strlen(why), 3);
    buf_clear(&ok);
    codec_batch_clear(&b);
}

/* ---- accepted variants ---- */

TEST(fields_in_any_order_and_unknown_fields)
{
    struct buf p;
    buf_init(&p);
    /* Reverse order, no v, plus unknown fields of every kind, prev and ttl. */
    w_map(&p, 17);
    w_text(&p, "op_id"), w_bytes(&p, OPID, 16);
    w_text(&p, "zz_uint"), w_uint(&p, UINT64_MAX);
    w_text(&p, "src"), w_text(&p, "n9");
    w_text(&p, "zz_neg"), w_raw(&p, "\x3b\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    w_text(&p, "ts"), w_uint(&p, 77);
    w_text(&p, "zz_float"), w_raw(&p, "\xfb\x40\x09\x21\xfb\x54\x44\x2d\x18", 9);
    w_text(&p, "zz_half"), w_raw(&p, "\xf9\x3c\x00", 3);
    w_text(&p, "val"), w_bytes(&p, "V", 1);
    w_text(&p, "zz_misc"), w_arr(&p, 5), w_raw(&p, "\xf4\xf5\xf7\xf6\x20", 5);
    w_text(&p, "key"), w_bytes(&p, "K", 1);
    w_text(&p, "zz_nested");
    w_map(&p, 2), w_text(&p, "a"), w_arr(&p, 2), w_map(&p, 0), w_arr(&p, 1), w_arr(&p, 0);
    w_uint(&p, 5), w_map(&p, 1), w_bytes(&p, "x", 1), w_text(&p, "y");
    w_text(&p, "op"), w_text(&p, "prepend");
    w_text(&p, "prev"), w_null(&p);
    w_text(&p, "ttl"), w_uint(&p, 3600);
    w_text(&p, "zz_text"), w_textn(&p, "\xff not utf-8 but ignored", 23);
    w_uint(&p, 7), w_text(&p, "integer key: unknown field");
    w_arr(&p, 2), w_uint(&p, 1), w_map(&p, 1), w_null(&p), w_null(&p); /* array key */
    w_uint(&p, 0);
    struct codec_batch b;
    codec_batch_init(&b);
    DECODE_OK(&p, &b);
    ASSERT_EQ(b.n, 1);
    const struct codec_event *ev = &b.ev[0];
    ASSERT_EQ(ev->op, CODEC_OP_PREPEND);
    ASSERT_SLICE_EQ(ev->key, ev->key_len, "K");
    ASSERT_SLICE_EQ(ev->val, ev->val_len, "V");
    ASSERT_SLICE_EQ(ev->src, ev->src_len, "n9");
    ASSERT_U64_EQ(ev->ts, 77);
    ASSERT_MEM_EQ(ev->op_id, OPID, 16);

    /* ttl null, del without val, val null for del, field names that merely resemble known ones. */
    buf_reset(&p);
    w_map(&p, 9);
    w_text(&p, "ttl"), w_null(&p);
    w_text(&p, "VAL"), w_bytes(&p, "x", 1);
    w_text(&p, "op "), w_text(&p, "set");
    w_text(&p, "op"), w_text(&p, "del");
    w_text(&p, "key"), w_text(&p, "gone");
    w_text(&p, "ts"), w_uint(&p, 1);
    w_text(&p, "src"), w_text(&p, "n1");
    w_text(&p, "op_id"), w_bytes(&p, OPID, 16);
    w_text(&p, "val"), w_null(&p);
    DECODE_OK(&p, &b);
    ASSERT_EQ(b.ev[0].op, CODEC_OP_DEL);
    ASSERT(!b.ev[0].has_val);
    ASSERT_SLICE_EQ(b.ev[0].key, b.ev[0].key_len, "gone");
    codec_batch_clear(&b);
    buf_clear(&p);
}

TEST(merklekv_hand_built)
{
    /* MerkleKV's shape: no v, val and op_id as arrays of uints, prev and ttl null. */
    const uint8_t val[] = { 0, 1, 23, 24, 100, 255 };
    struct buf p;
    buf_init(&p);
    w_map(&p, 8);
    w_text(&p, "op"), w_text(&p, "set");
    w_text(&p, "key"), w_text(&p, "mk");
    w_text(&p, "val"), w_uint_array(&p, val, sizeof(val));
    w_text(&p, "ts"), w_uint(&p, 1700000000000000000u);
    w_text(&p, "src"), w_text(&p, "merkle-1");
    w_text(&p, "op_id"), w_uint_array(&p, OPID, 16);
    w_text(&p, "prev"), w_null(&p);
    w_text(&p, "ttl"), w_null(&p);
    struct codec_batch b;
    codec_batch_init(&b);
    DECODE_OK(&p, &b);
    ASSERT_EQ(b.n, 1);
    ASSERT_EQ(b.ev[0].val_len, sizeof(val));
    ASSERT_MEM_EQ(b.ev[0].val, val, sizeof(val));
    ASSERT_MEM_EQ(b.ev[0].op_id, OPID, 16);
    ASSERT_U64_EQ(b.ev[0].ts, 1700000000000000000u);

    /* Elements in wider-than-needed encodings are fine when the value fits in a byte. */
    buf_reset(&p);
    w_map(&p, 6);
    w_text(&p, "op"), w_text(&p, "incr");
    w_text(&p, "key"), w_text(&p, "ctr");
    w_text(&p, "val"), w_arr(&p, 4);
    w_raw(&p, "\x18\x05\x19\x00\xff\x1a\x00\x00\x00\x07\x1b\x00\x00\x00\x00\x00\x00\x00\x31", 19);
    w_text(&p, "ts"), w_raw(&p, "\x19\x01\x00", 3);
    w_text(&p, "src"), w_text(&p, "m");
    w_text(&p, "op_id"), w_uint_array(&p, OPID, 16);
    DECODE_OK(&p, &b);
    ASSERT_EQ(b.ev[0].op, CODEC_OP_INCR);
    ASSERT_SLICE_EQ(b.ev[0].val, b.ev[0].val_len,
                    "\x05\xff\x07"
                    "1");
    ASSERT_U64_EQ(b.ev[0].ts, 256);

    /* A batch mixing both shapes: scratch values of several events resolve to the right bytes. */
    buf_reset(&p);
    w_arr(&p, 4);
    for (int i = 0; i < 4; i++) {
        w_map(&p, 6);
        w_text(&p, "op"), w_text(&p, "set");
        w_text(&p, "key"), w_text(&p, "k");
        w_text(&p, "val");
        char v[16];
        snprintf(v, sizeof(v), "val%d", i);
        if (i % 2)
            w_bytes(&p, v, strlen(v));
        else
            w_uint_array(&p, (const uint8_t *) v, strlen(v));
        w_text(&p, "ts"), w_uint(&p, (uint64_t) i);
        w_text(&p, "src"), w_text(&p, "m");
        w_text(&p, "op_id"), (i % 2) ? w_uint_array(&p, OPID, 16) : w_bytes(&p, OPID, 16);
    }
    DECODE_OK(&p, &b);
    ASSERT_EQ(b.n, 4);
    for (int i = 0; i < 4; i++) {
        char v[16];
        snprintf(v, sizeof(v), "val%d", i);
        ASSERT_SLICE_EQ(b.ev[i].val, b.ev[i].val_len, v);
        ASSERT_MEM_EQ(b.ev[i].op_id, OPID, 16);
    }
    codec_batch_clear(&b);
    buf_clear(&p);
}

TEST(exact_bytes)
{
    uint8_t opid[16];
    for (int i = 0; i < 16; i++)
        opid[i] = (uint8_t) i;
    struct codec_event ev = make_event(CODEC_OP_SET, "k", 1, "v", 1, 0x0123456789abcdefu, "n");
    memcpy(ev.op_id, opid, 16);
    /* One literal per field; no hex escape is followed by a hex digit. */
    static const char want_cbor[] =                      /* sizeof - 1 bytes */
            "\xa7"                                       /* map(7) */
            "\x61v\x01"                                  /* "v": 1 */
            "\x62op\x63set"                              /* "op": "set" */
            "\x63key\x61k"                               /* "key": "k" */
            "\x63val\x41v"                               /* "val": h'76' */
            "\x62ts\x1b\x01\x23\x45\x67\x89\xab\xcd\xef" /* "ts": uint64 */
            "\x63src\x61n"                               /* "src": "n" */
            "\x65op_id\x50"                              /* "op_id": bytes(16) */
            "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f";
    struct buf out;
    buf_init(&out);
    codec_encode_event(&out, &ev, CODEC_WIRE_CBOR);
    ASSERT_EQ(out.len, sizeof(want_cbor) - 1);
    ASSERT_MEM_EQ(out.data, want_cbor, sizeof(want_cbor) - 1);

    /* MerkleKV wire, a del (val null) with ts 1000, and a batch header of 1000 around it. */
    ev = make_event(CODEC_OP_DEL, "k", 1, NULL, 0, 1000, "n");
    memcpy(ev.op_id, opid, 16);
    static const char want_mkv[] = /* sizeof - 1 bytes */
            "\x99\x03\xe8"         /* array(1000) */
            "\xa7"                 /* map(7) */
            "\x61v\x01"            /* "v": 1 */
            "\x62op\x63\x64\x65l"  /* "op": "del" */
            "\x63key\x61k"         /* "key": "k" */
            "\x63val\xf6"          /* "val": null */
            "\x62ts\x19\x03\xe8"   /* "ts": 1000 */
            "\x63src\x61n"         /* "src": "n" */
            "\x65op_id\x90"        /* "op_id": array(16) of small uints */
            "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f";
    buf_reset(&out);
    codec_encode_batch_header(&out, 1000);
    codec_encode_event(&out, &ev, CODEC_WIRE_MERKLEKV);
    ASSERT_EQ(out.len, sizeof(want_mkv) - 1);
    ASSERT_MEM_EQ(out.data, want_mkv, sizeof(want_mkv) - 1);
    ASSERT_EQ(out.data[out.len], 0); /* struct buf's NUL-after-len invariant holds */

    /* A MerkleKV val array: bytes >= 24 take two bytes (0x18 xx). */
    ev = make_event(CODEC_OP_SET, "k", 1, "\x05\xc8", 2, 1, "n");
    buf_reset(&out);
    codec_encode_event(&out, &ev, CODEC_WIRE_MERKLEKV);
    ASSERT(memmem(out.data, out.len, "\x63val\x82\x05\x18\xc8", 8) != NULL);
    buf_clear(&out);
}

/* ---- rejections ---- */

TEST(reject_not_cbor_or_wrong_shape)
{
    EXPECT_BAD_LIT("", "empty payload");
    EXPECT_BAD_LIT("\x1c", "invalid CBOR");     /* reserved additional information */
    EXPECT_BAD_LIT("\xfc", "invalid CBOR");     /* reserved simple encoding */
    EXPECT_BAD_LIT("\xf8\x20", "invalid CBOR"); /* one-byte simple value (unassigned here) */
    EXPECT_BAD_LIT("\xff", "break");
    EXPECT_BAD_LIT("\x01", "must be a map or an array");
    EXPECT_BAD_LIT("\x63"
                   "abc",
                   "must be a map or an array");
    EXPECT_BAD_LIT("\x43"
                   "abc",
                   "must be a map or an array");
    EXPECT_BAD_LIT("\xf6", "must be a map or an array");
    EXPECT_BAD_LIT("\xfb\x40\x09\x21\xfb\x54\x44\x2d\x18", "must be a map or an array");
    EXPECT_BAD_LIT("\x81\x01", "event 0: must be a map");
    EXPECT_BAD_LIT("\x82\xa0\x01", "event 0: missing field 'op'");
    EXPECT_BAD_LIT("\xa0", "event 0: missing field 'op'");
    struct buf p;
    buf_init(&p);
    w_arr(&p, 2);
    std_event(&p, "", 0);
    w_arr(&p, 0);
    EXPECT_BAD(&p, "event 1: must be a map");
    buf_clear(&p);
}

TEST(reject_batch_limits)
{
    EXPECT_BAD_LIT("\x80", "empty batch");
    EXPECT_BAD_LIT("\x9a\x00\x01\x86\xa1", "over the limit"); /* 100001 events */
    EXPECT_BAD_LIT("\x9b\x00\x00\x00\x01\x00\x00\x00\x00", "over the limit");
    /* A real batch of CODEC_MAX_EVENTS + 1 small events. */
    struct buf p, ev;
    buf_init(&p);
    buf_init(&ev);
    std_event(&ev, "", 0);
    w_arr(&p, CODEC_MAX_EVENTS + 1);
    ASSERT_EQ(p.len, 5); /* 0x9a 00 01 86 a1 */
    for (size_t i = 0; i <= CODEC_MAX_EVENTS; i++)
        w_raw(&p, ev.data, ev.len);
    EXPECT_BAD(&p, "over the limit");
    /* ...and exactly CODEC_MAX_EVENTS is fine. */
    p.data[4] = 0xa0;
    struct codec_batch b;
    codec_batch_init(&b);
    decode_ok_at(__LINE__, p.data, p.len - ev.len, &b);
    ASSERT_EQ(b.n, CODEC_MAX_EVENTS);
    codec_batch_clear(&b);
    buf_clear(&ev);
    buf_clear(&p);
}

TEST(reject_payload_over_limit)
{
    size_t n = CODEC_MAX_PAYLOAD + 1u;
    uint8_t *p = calloc(1, n);
    ASSERT(p != NULL);
    p[0] = 0x5a; /* a byte string: would be fine shape-wise if it were the only problem */
    expect_bad_at(__LINE__, p, n, "over the limit");
    free(p);
}

TEST(reject_trailing_and_truncated)
{
    struct buf p;
    buf_init(&p);
    std_event(&p, "", 0);
    w_uint(&p, 0);
    EXPECT_BAD(&p, "1 trailing bytes");
    p.len -= 2;
    EXPECT_BAD(&p, "truncated");
    buf_reset(&p);
    w_arr(&p, 2);
    std_event(&p, "", 0);
    EXPECT_BAD(&p, "truncated");
    buf_reset(&p);
    std_event(&p, "", 0);
    std_event(&p, "", 0); /* two top items */
    EXPECT_BAD(&p, "trailing bytes");
    buf_clear(&p);
}

TEST(reject_duplicate_fields)
{
    static const char *const names[] = { "v", "op", "key", "val", "ts", "src", "op_id" };
    struct buf p;
    buf_init(&p);
    for (size_t i = 0; i < 7; i++) {
        buf_reset(&p);
        std_event(&p, "", 1);
        /* Repeat the field with the same valid value as std_event wrote. */
        w_text(&p, names[i]);
        switch (i) {
        case 0:
            w_uint(&p, 1);
            break;
        case 1:
            w_text(&p, "set");
            break;
        case 2:
            w_text(&p, "k");
            break;
        case 3:
            w_bytes(&p, "hello", 5);
            break;
        case 4:
            w_uint(&p, 42);
            break;
        case 5:
            w_text(&p, "n1");
            break;
        default:
            w_bytes(&p, OPID, 16);
            break;
        }
        char want[64];
        snprintf(want, sizeof(want), "event 0: duplicate field '%s'", names[i]);
        EXPECT_BAD(&p, want);
    }
    buf_reset(&p);
    std_event(&p, "", 2);
    w_text(&p, "prev"), w_null(&p), w_text(&p, "prev"), w_null(&p);
    EXPECT_BAD(&p, "duplicate field 'prev'");
    buf_reset(&p);
    std_event(&p, "", 2);
    w_text(&p, "ttl"), w_null(&p), w_text(&p, "ttl"), w_uint(&p, 5);
    EXPECT_BAD(&p, "duplicate field 'ttl'");
    /* Unknown fields may repeat. */
    buf_reset(&p);
    std_event(&p, "", 2);
    w_text(&p, "x"), w_null(&p), w_text(&p, "x"), w_uint(&p, 5);
    struct codec_batch b;
    codec_batch_init(&b);
    DECODE_OK(&p, &b);
    codec_batch_clear(&b);
    buf_clear(&p);
}

TEST(reject_missing_fields)
{
    static const char *const req[] = { "op", "key", "ts", "src", "op_id" };
    struct buf p;
    buf_init(&p);
    for (size_t i = 0; i < 5; i++) {
        char omit[16], want[64];
        snprintf(omit, sizeof(omit), ",%s,", req[i]);
        snprintf(want, sizeof(want), "missing field '%s'", req[i]);
        buf_reset(&p);
        std_event(&p, omit, 0);
        EXPECT_BAD(&p, want);
    }
    /* v is optional. */
    buf_reset(&p);
    std_event(&p, ",v,", 0);
    struct codec_batch b;
    codec_batch_init(&b);
    DECODE_OK(&p, &b);
    codec_batch_clear(&b);
    buf_clear(&p);
}

/* Builds the standard event with field name's value replaced by the raw CBOR item. */
static void with_field(struct buf *p, const char *name, const void *item, size_t n)
{
    char omit[16];
    snprintf(omit, sizeof(omit), ",%s,", name);
    buf_reset(p);
    std_event(p, omit, 1);
    w_text(p, name);
    w_raw(p, item, n);
}

#define EXPECT_FIELD_BAD(p, name, lit, want)                  \
    do {                                                      \
        with_field((p), (name), (lit), sizeof(lit) - 1);      \
        expect_bad_at(__LINE__, (p)->data, (p)->len, (want)); \
    } while (0)

TEST(reject_wrong_types)
{
    struct buf p;
    buf_init(&p);
    EXPECT_FIELD_BAD(&p, "v",
                     "\x61"
                     "1",
                     "field 'v' must be an unsigned integer, got a text");
    EXPECT_FIELD_BAD(&p, "v", "\xf9\x3c\x00", "field 'v' must be an unsigned integer, got a float");
    EXPECT_FIELD_BAD(&p, "v", "\x20", "got a negative integer");
    EXPECT_FIELD_BAD(&p, "op",
                     "\x43"
                     "set",
                     "field 'op' must be a text string, got a byte");
    EXPECT_FIELD_BAD(&p, "op", "\xf6", "field 'op' must be a text string, got null");
    EXPECT_FIELD_BAD(&p, "key", "\x01", "field 'key' must be a text or byte string");
    EXPECT_FIELD_BAD(&p, "key", "\x81\x01", "field 'key' must be a text or byte string");
    EXPECT_FIELD_BAD(&p, "val",
                     "\x61"
                     "v",
                     "field 'val' must be a byte string, an array");
    EXPECT_FIELD_BAD(&p, "val", "\xa0", "field 'val' must be a byte string, an array");
    EXPECT_FIELD_BAD(&p, "val", "\xf5", "got a boolean");
    EXPECT_FIELD_BAD(&p, "ts", "\x3a\x00\x00\x00\x01", "field 'ts' must be an unsigned integer");
    EXPECT_FIELD_BAD(&p, "ts", "\xfb\x41\xd9\x4c\x87\x00\x00\x00\x00", "got a float");
    EXPECT_FIELD_BAD(&p, "ts", "\xfa\x47\xc3\x50\x00", "got a float");
    EXPECT_FIELD_BAD(&p, "ts",
                     "\x62"
                     "42",
                     "got a text string");
    EXPECT_FIELD_BAD(&p, "ts", "\xf7", "got undefined");
    EXPECT_FIELD_BAD(&p, "src",
                     "\x42"
                     "n1",
                     "field 'src' must be a text string, got a byte");
    EXPECT_FIELD_BAD(&p, "src", "\x01", "field 'src' must be a text string");
    EXPECT_FIELD_BAD(&p, "op_id",
                     "\x70"
                     "0123456789abcdef",
                     "field 'op_id' must be a byte string");
    EXPECT_FIELD_BAD(&p, "op_id", "\xf6", "field 'op_id' must be a byte string");
    EXPECT_FIELD_BAD(&p, "prev", "\x00", "field 'prev' must be null");
    EXPECT_FIELD_BAD(&p, "prev",
                     "\x41"
                     "x",
                     "field 'prev' must be null");
    EXPECT_FIELD_BAD(&p, "prev", "\xf4", "field 'prev' must be null");
    EXPECT_FIELD_BAD(&p, "prev", "\xa0", "field 'prev' must be null");
    EXPECT_FIELD_BAD(&p, "ttl",
                     "\x61"
                     "1",
                     "field 'ttl' must be null or a uint");
    EXPECT_FIELD_BAD(&p, "ttl", "\x20", "field 'ttl' must be null or a uint");
    EXPECT_FIELD_BAD(&p, "ttl", "\xf9\x3c\x00", "field 'ttl' must be null or a uint");
    buf_clear(&p);
}

TEST(reject_bad_values)
{
    struct buf p;
    buf_init(&p);
    /* v != 1 */
    EXPECT_FIELD_BAD(&p, "v", "\x00", "field 'v' must be 1, got 0");
    EXPECT_FIELD_BAD(&p, "v", "\x02", "field 'v' must be 1, got 2");
    EXPECT_FIELD_BAD(&p, "v", "\x19\x01\x01", "field 'v' must be 1, got 257");
    /* unknown op names, and op text that is not UTF-8 */
    EXPECT_FIELD_BAD(&p, "op",
                     "\x63"
                     "put",
                     "field 'op' is not a known operation");
    EXPECT_FIELD_BAD(&p, "op",
                     "\x63"
                     "SET",
                     "field 'op' is not a known operation");
    EXPECT_FIELD_BAD(&p, "op", "\x60", "field 'op' is not a known operation");
    EXPECT_FIELD_BAD(&p, "op",
                     "\x64"
                     "set\0",
                     "field 'op' is not a known operation");
    EXPECT_FIELD_BAD(&p, "op",
                     "\x63"
                     "s\xfft",
                     "field 'op' is not a known operation");
    /* op_id not 16 bytes */
    EXPECT_FIELD_BAD(&p, "op_id",
                     "\x4f"
                     "0123456789abcde",
                     "must be 16 bytes, got 15");
    EXPECT_FIELD_BAD(&p, "op_id",
                     "\x51"
                     "0123456789abcdefg",
                     "must be 16 bytes, got 17");
    EXPECT_FIELD_BAD(&p, "op_id", "\x40", "must be 16 bytes, got 0");
    EXPECT_FIELD_BAD(&p, "op_id",
                     "\x8f"
                     "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e",
                     "must be 16 bytes, got an array of 15");
    EXPECT_FIELD_BAD(&p, "op_id",
                     "\x91"
                     "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10",
                     "must be 16 bytes, got an array of 17");
    EXPECT_FIELD_BAD(&p, "op_id", "\x80", "must be 16 bytes, got an array of 0");
    /* array elements that are not uints 0..255 */
    EXPECT_FIELD_BAD(
            &p, "op_id",
            "\x90"
            "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x19\x01\x00",
            "field 'op_id' element 15 must be an unsigned integer 0..255, got a larger one");
    EXPECT_FIELD_BAD(&p, "op_id",
                     "\x90"
                     "\x20\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
                     "field 'op_id' element 0 must be an unsigned integer 0..255, got a negative");
    EXPECT_FIELD_BAD(&p, "val", "\x82\x01\x19\x01\x00", "field 'val' element 1 must be");
    EXPECT_FIELD_BAD(&p, "val", "\x82\x01\x1b\x00\x00\x00\x01\x00\x00\x00\x00", "got a larger");
    EXPECT_FIELD_BAD(&p, "val",
                     "\x81\x41"
                     "x",
                     "got a byte string");
    EXPECT_FIELD_BAD(&p, "val", "\x81\x80", "got an array");
    EXPECT_FIELD_BAD(&p, "val", "\x81\xf6", "got null");
    EXPECT_FIELD_BAD(&p, "val", "\x81\xf9\x3c\x00", "got a float");
    /* key: empty, over the limit, text that is not UTF-8 */
    EXPECT_FIELD_BAD(&p, "key", "\x60", "field 'key' must not be empty");
    EXPECT_FIELD_BAD(&p, "key", "\x40", "field 'key' must not be empty");
    EXPECT_FIELD_BAD(&p, "key", "\x62\xc3\x28", "field 'key' is not valid UTF-8");
    EXPECT_FIELD_BAD(&p, "key", "\x62\xc0\x80", "field 'key' is not valid UTF-8");
    EXPECT_FIELD_BAD(&p, "key", "\x63\xed\xa0\x80", "field 'key' is not valid UTF-8");
    EXPECT_FIELD_BAD(&p, "key", "\x61\xff", "field 'key' is not valid UTF-8");
    /* src: empty, too long, not UTF-8 */
    EXPECT_FIELD_BAD(&p, "src", "\x60", "field 'src' must not be empty");
    EXPECT_FIELD_BAD(&p, "src", "\x62\xe2\x82", "field 'src' is not valid UTF-8");
    EXPECT_FIELD_BAD(&p, "src", "\x64\xf4\x90\x80\x80", "field 'src' is not valid UTF-8");
    EXPECT_FIELD_BAD(&p, "src", "\x61\x80", "field 'src' is not valid UTF-8");
    char long_src[CODEC_MAX_SRC + 1];
    memset(long_src, 'a', sizeof(long_src));
    buf_reset(&p);
    std_event(&p, ",src,", 1);
    w_text(&p, "src"), w_textn(&p, long_src, sizeof(long_src));
    EXPECT_BAD(&p, "field 'src' is 257 bytes, over the limit of 256");
    size_t kn = CODEC_MAX_KEY + 1u;
    uint8_t *long_key = malloc(kn);
    ASSERT(long_key != NULL);
    memset(long_key, 'k', kn);
    for (int text = 0; text < 2; text++) {
        buf_reset(&p);
        std_event(&p, ",key,", 1);
        w_text(&p, "key");
        if (text)
            w_textn(&p, long_key, kn);
        else
            w_bytes(&p, long_key, kn);
        EXPECT_BAD(&p, "field 'key' is 1048577 bytes, over the limit of 1048576");
    }
    free(long_key);
    buf_clear(&p);
}

TEST(reject_val_and_op_mismatch)
{
    struct buf p;
    buf_init(&p);
    /* del with a value, in each form (empty too) */
    const char *forms[] = { "\x41x", "\x40", "\x81\x01", "\x80" };
    const size_t lens[] = { 2, 1, 2, 1 };
    for (size_t i = 0; i < 4; i++) {
        buf_reset(&p);
        std_event(&p, ",op,val,", 2);
        w_text(&p, "op"), w_text(&p, "del");
        w_text(&p, "val"), w_raw(&p, forms[i], lens[i]);
        EXPECT_BAD(&p, "event 0: field 'val' must be null or absent for 'del'");
    }
    /* every other op without a value, or with null */
    for (int op = CODEC_OP_SET; op <= CODEC_OP_PREPEND; op++) {
        if (op == CODEC_OP_DEL) continue;
        char want[64];
        snprintf(want, sizeof(want), "field 'val' is required for '%s'",
                 codec_op_name((enum codec_op) op));
        buf_reset(&p);
        std_event(&p, ",op,val,", 1);
        w_text(&p, "op"), w_text(&p, codec_op_name((enum codec_op) op));
        EXPECT_BAD(&p, want);
        buf_reset(&p);
        std_event(&p, ",op,val,", 2);
        w_text(&p, "op"), w_text(&p, codec_op_name((enum codec_op) op));
        w_text(&p, "val"), w_null(&p);
        EXPECT_BAD(&p, want);
    }
    buf_clear(&p);
}

TEST(reject_tags_indefinite_and_breaks)
{
    struct buf p;
    buf_init(&p);
    EXPECT_BAD_LIT("\xc0\xa0", "CBOR tags are not accepted");
    EXPECT_BAD_LIT("\xd9\xd9\xf7\xa0", "CBOR tags are not accepted"); /* self-described CBOR */
    EXPECT_BAD_LIT("\x81\xc1\xa0", "CBOR tags are not accepted");
    EXPECT_FIELD_BAD(&p, "ts", "\xc1\x1a\x65\x00\x00\x00", "CBOR tags are not accepted");
    EXPECT_FIELD_BAD(&p, "key", "\xd8\x20\x61k", "CBOR tags are not accepted");
    EXPECT_FIELD_BAD(&p, "zz", "\x82\x00\xc2\x41\x01", "CBOR tags are not accepted");
    /* tag as a map key */
    buf_reset(&p);
    std_event(&p, "", 1);
    w_raw(&p, "\xc0\x60\x00", 3);
    EXPECT_BAD(&p, "CBOR tags are not accepted");
    /* indefinite lengths, top level and nested */
    EXPECT_BAD_LIT("\xbf\xff", "indefinite-length");
    EXPECT_BAD_LIT("\x9f\xa0\xff", "indefinite-length");
    EXPECT_BAD_LIT("\x81\xbf\xff", "indefinite-length");
    EXPECT_BAD_LIT("\x5f\x41x\xff", "indefinite-length");
    EXPECT_FIELD_BAD(&p, "key", "\x7f\x61k\xff", "indefinite-length");
    EXPECT_FIELD_BAD(&p, "val", "\x5f\x41x\xff", "indefinite-length");
    EXPECT_FIELD_BAD(&p, "op_id", "\x9f\xff", "indefinite-length");
    EXPECT_FIELD_BAD(&p, "zz", "\x9f\xff", "indefinite-length");
    EXPECT_FIELD_BAD(&p, "zz", "\x81\xbf\xff", "indefinite-length");
    EXPECT_FIELD_BAD(&p, "zz", "\x7f\xff", "indefinite-length");
    /* stray breaks */
    EXPECT_FIELD_BAD(&p, "ts", "\xff", "unexpected CBOR break");
    EXPECT_FIELD_BAD(&p, "zz", "\x81\xff", "unexpected CBOR break");
    buf_reset(&p);
    std_event(&p, "", 1);
    w_raw(&p, "\xff\x00", 2);
    EXPECT_BAD(&p, "unexpected CBOR break");
    /* invalid items inside an unknown field */
    EXPECT_FIELD_BAD(&p, "zz", "\x81\x1c", "invalid CBOR");
    EXPECT_FIELD_BAD(&p, "zz", "\x81\xfd", "invalid CBOR");
    buf_clear(&p);
}

TEST(reject_batch_with_one_bad_event)
{
    struct buf p;
    buf_init(&p);
    w_arr(&p, 4);
    std_event(&p, "", 0);
    std_event(&p, "", 0);
    std_event(&p, ",ts,", 0);
    std_event(&p, "", 0);
    EXPECT_BAD(&p, "event 2: missing field 'ts'");
    buf_clear(&p);
}

/* ---- nesting and declared lengths ---- */

static void nested(struct buf *p, const char *name, size_t levels, uint8_t head)
{
    with_field(p, name, "", 0);
    for (size_t i = 0; i < levels; i++) {
        w_raw(p, &head, 1);
        if (head == 0xa1) w_uint(p, 0); /* map key; the value is the next level */
    }
    w_uint(p, 0);
}

TEST(nesting_limit_in_unknown_fields)
{
    struct buf p;
    buf_init(&p);
    struct codec_batch b;
    codec_batch_init(&b);
    const uint8_t heads[] = { 0x81, 0xa1 };
    for (size_t h = 0; h < 2; h++) {
        /* The event map is level 1, so an unknown value may nest 15 more containers. */
        nested(&p, "zz", CODEC_MAX_DEPTH - 1, heads[h]);
        DECODE_OK(&p, &b);
        nested(&p, "zz", CODEC_MAX_DEPTH, heads[h]);
        EXPECT_BAD(&p, "nested deeper than 16 levels");
        /* Inside a batch, one level less. */
        struct buf q;
        buf_init(&q);
        nested(&p, "zz", CODEC_MAX_DEPTH - 2, heads[h]);
        w_arr(&q, 1), w_raw(&q, p.data, p.len);
        DECODE_OK(&q, &b);
        buf_reset(&q);
        nested(&p, "zz", CODEC_MAX_DEPTH - 1, heads[h]);
        w_arr(&q, 1), w_raw(&q, p.data, p.len);
        EXPECT_BAD(&q, "nested deeper than 16 levels");
        buf_clear(&q);
    }
    /* Deep nesting in a map key. */
    buf_reset(&p);
    std_event(&p, "", 1);
    for (int i = 0; i < 40; i++)
        w_arr(&p, 1);
    w_uint(&p, 0);
    w_uint(&p, 0);
    EXPECT_BAD(&p, "nested deeper than 16 levels");
    codec_batch_clear(&b);
    buf_clear(&p);
}

TEST(deep_nesting_rejected_without_recursion)
{
    const size_t depth = 100000;
    uint8_t *p = malloc(depth * 2 + 1);
    ASSERT(p != NULL);
    /* 100,000 nested one-element arrays: a batch whose event 0 is not a map. */
    memset(p, 0x81, depth);
    p[depth] = 0x00;
    expect_bad_at(__LINE__, p, depth + 1, "event 0: must be a map");
    /* 100,000 nested one-entry maps, each the key of the next: unknown-field nesting. */
    memset(p, 0xa1, depth);
    expect_bad_at(__LINE__, p, depth + 1, "nested deeper than 16 levels");
    /* {0: {0: {0: ...}}}: nesting through values. */
    for (size_t i = 0; i < depth; i++)
        p[2 * i] = 0xa1, p[2 * i + 1] = 0x00;
    p[2 * depth] = 0x00;
    expect_bad_at(__LINE__, p, depth * 2 + 1, "nested deeper than 16 levels");
    /* The same arrays as an unknown field's value. */
    struct buf q;
    buf_init(&q);
    with_field(&q, "zz", "", 0);
    memset(p, 0x81, depth);
    w_raw(&q, p, depth);
    w_uint(&q, 0);
    EXPECT_BAD(&q, "nested deeper than 16 levels");
    buf_clear(&q);
    free(p);
}

TEST(huge_declared_lengths_rejected_quickly)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    EXPECT_BAD_LIT("\x9b\x80\x00\x00\x00\x00\x00\x00\x00\xa0", "over the limit");
    EXPECT_BAD_LIT("\x9a\x00\x01\x86\xa0\xa0", "truncated: batch declares 100000 entries");
    EXPECT_BAD_LIT("\xbb\x80\x00\x00\x00\x00\x00\x00\x00\x00", "truncated: event map declares");
    EXPECT_BAD_LIT("\xbb\xff\xff\xff\xff\xff\xff\xff\xff\x00", "truncated: event map declares");
    EXPECT_BAD_LIT("\x5b\x80\x00\x00\x00\x00\x00\x00\x00\x00", "truncated");
    EXPECT_BAD_LIT("\x7b\xff\xff\xff\xff\xff\xff\xff\xff\x00", "truncated");
    EXPECT_BAD_LIT("\x81\xbb\x80\x00\x00\x00\x00\x00\x00\x00", "truncated: event map declares");
    struct buf p;
    buf_init(&p);
    EXPECT_FIELD_BAD(&p, "val", "\x5b\x80\x00\x00\x00\x00\x00\x00\x00", "truncated");
    EXPECT_FIELD_BAD(&p, "val", "\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "truncated");
    EXPECT_FIELD_BAD(&p, "val", "\x9b\x80\x00\x00\x00\x00\x00\x00\x00", "array declares");
    EXPECT_FIELD_BAD(&p, "op_id", "\x9b\x00\x00\x00\x00\x00\x00\x00\x10", "truncated: array");
    EXPECT_FIELD_BAD(&p, "key", "\x7b\x80\x00\x00\x00\x00\x00\x00\x00", "truncated");
    EXPECT_FIELD_BAD(&p, "zz", "\x9b\x80\x00\x00\x00\x00\x00\x00\x00", "array declares");
    EXPECT_FIELD_BAD(&p, "zz", "\xbb\x40\x00\x00\x00\x00\x00\x00\x00", "map declares");
    EXPECT_FIELD_BAD(&p, "zz", "\xbb\xff\xff\xff\xff\xff\xff\xff\xff", "map declares");
    EXPECT_FIELD_BAD(&p, "zz", "\x5b\x7f\xff\xff\xff\xff\xff\xff\xff", "truncated");
    /* A map entry takes two items: a map of n entries needs 2n bytes, an array n. */
    EXPECT_FIELD_BAD(&p, "zz", "\xa2\x00\x00\x00", "map declares 2 entries but only 3 bytes");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double) (t1.tv_sec - t0.tv_sec) * 1e3 + (double) (t1.tv_nsec - t0.tv_nsec) / 1e6;
    ASSERT(ms < 1000.0); /* microseconds in practice; generous for sanitizer builds */
    buf_clear(&p);
}

/* ---- fuzzing ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
    /* xorshift64*: deterministic across runs and platforms */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

static size_t fuzz_one(const uint8_t *p, size_t len, struct codec_batch *b)
{
    char why[128];
    int rc = codec_decode(p, len, b, why, sizeof(why));
    if (rc == 0) {
        check_sane(p, len, b);
        return 1;
    }
    ASSERT_EQ(rc, -EBADMSG);
    ASSERT_EQ(b->n, 0);
    ASSERT(why[0] != '\0' && strchr(why, '\n') == NULL);
    return 0;
}

/* A few valid payloads to mutate: both wires, a batch, unknown fields, a MerkleKV hand build. */
static void fuzz_seeds(struct buf *seeds, size_t *n)
{
    *n = 0;
    struct codec_event ev = make_event(CODEC_OP_SET, "key", 3, "value!", 6, 123456789, "n1");
    codec_encode_event(&seeds[(*n)++], &ev, CODEC_WIRE_CBOR);
    codec_encode_event(&seeds[(*n)++], &ev, CODEC_WIRE_MERKLEKV);
    ev = make_event(CODEC_OP_DEL, "\xff\x00k", 3, NULL, 0, 1, "node");
    codec_encode_event(&seeds[(*n)++], &ev, CODEC_WIRE_CBOR);
    struct buf *s = &seeds[(*n)++];
    codec_encode_batch_header(s, 3);
    for (int i = 0; i < 3; i++) {
        ev = make_event((enum codec_op)(i * 2), "kk", 2, "vv", 2, (uint64_t) i << 40, "src");
        codec_encode_event(s, &ev, i == 1 ? CODEC_WIRE_MERKLEKV : CODEC_WIRE_CBOR);
    }
    s = &seeds[(*n)++];
    with_field(s, "zz", "\x82\xa1\x01\x82\xf6\xf9\x3c\x00\x3a\x00\x00\x00\x01", 13);
    s = &seeds[(*n)++];
    w_map(s, 7);
    w_text(s, "ttl"), w_null(s);
    w_text(s, "op_id"), w_uint_array(s, OPID, 16);
    w_text(s, "val"), w_uint_array(s, (const uint8_t *) "\x01\xff\x20", 3);
    w_text(s, "src"), w_text(s, "m");
    w_text(s, "ts"), w_uint(s, 99);
    w_text(s, "key"), w_text(s, "k");
    w_text(s, "op"), w_text(s, "append");
}

TEST(fuzz_deterministic)
{
    struct buf seeds[8];
    for (size_t i = 0; i < 8; i++)
        buf_init(&seeds[i]);
    size_t nseeds;
    fuzz_seeds(seeds, &nseeds);
    struct codec_batch b;
    codec_batch_init(&b);
    size_t cases = 0, accepted = 0;
    for (size_t i = 0; i < nseeds; i++) { /* the seeds are valid */
        DECODE_OK(&seeds[i], &b);
        cases++;
    }

    /* Truncation at every length, and every single-bit flip, of every seed. */
    uint8_t *tmp = malloc(4096);
    ASSERT(tmp != NULL);
    for (size_t i = 0; i < nseeds; i++) {
        const struct buf *s = &seeds[i];
        ASSERT(s->len + 64 < 4096);
        for (size_t n = 0; n < s->len; n++) {
            uint8_t *t = malloc(n ? n : 1); /* exact size, so ASan catches reads past n */
            ASSERT(t != NULL);
            memcpy(t, s->data, n);
            ASSERT_EQ(fuzz_one(t, n, &b), 0); /* every strict prefix is incomplete */
            free(t);
            cases++;
        }
        for (size_t bit = 0; bit < s->len * 8; bit++) {
            memcpy(tmp, s->data, s->len);
            tmp[bit / 8] ^= (uint8_t) (1u << (bit % 8));
            accepted += fuzz_one(tmp, s->len, &b);
            cases++;
        }
    }

    /* Random mutations: flips, byte sets, insertions, deletions, truncations, splices. */
    for (size_t k = 0; k < 80000; k++) {
        const struct buf *s = &seeds[rng() % nseeds];
        size_t n = s->len;
        memcpy(tmp, s->data, n);
        int edits = 1 + (int) (rng() % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = n ? rng() % n : 0;
            switch (rng() % 6) {
            case 0:
                if (n) tmp[at] ^= (uint8_t) (1u << (rng() % 8));
                break;
            case 1:
                if (n) tmp[at] = (uint8_t) rng();
                break;
            case 2: /* insert 1..4 random bytes */
            {
                size_t ins = 1 + rng() % 4;
                if (n + ins >= 4096) break;
                memmove(tmp + at + ins, tmp + at, n - at);
                for (size_t j = 0; j < ins; j++)
                    tmp[at + j] = (uint8_t) rng();
                n += ins;
                break;
            }
            case 3: /* delete 1..4 bytes */
            {
                size_t del = 1 + rng() % 4;
                if (at + del > n) del = n - at;
                memmove(tmp + at, tmp + at + del, n - at - del);
                n -= del;
                break;
            }
            case 4:
                n = at;
                break;
            default: /* overwrite with an interesting head byte */
            {
                static const uint8_t heads[] = { 0x18, 0x19, 0x1a, 0x1b, 0x5b, 0x7b, 0x9b,
                                                 0xbb, 0x9f, 0xbf, 0x5f, 0x7f, 0xff, 0xc0,
                                                 0xd8, 0xf6, 0xf7, 0xf9, 0xfb, 0xa0, 0x80,
                                                 0x40, 0x60, 0x1c, 0xfc, 0xf8 };
                if (n) tmp[at] = heads[rng() % sizeof(heads)];
                break;
            }
            }
        }
        uint8_t *t = malloc(n ? n : 1); /* exact-size copy for ASan */
        ASSERT(t != NULL);
        memcpy(t, tmp, n);
        accepted += fuzz_one(t, n, &b);
        free(t);
        cases++;
    }

    /* Random byte strings, biased towards CBOR heads that open containers. */
    for (size_t k = 0; k < 30000; k++) {
        size_t n = rng() % 64;
        uint8_t *t = malloc(n ? n : 1);
        ASSERT(t != NULL);
        for (size_t j = 0; j < n; j++)
            t[j] = (uint8_t) rng();
        if (n && k % 2) t[0] = (uint8_t) (k % 4 == 1 ? 0xa0 + rng() % 8 : 0x80 + rng() % 4);
        accepted += fuzz_one(t, n, &b);
        free(t);
        cases++;
    }
    free(tmp);
    fprintf(stderr, "fuzz: %zu cases, %zu accepted\n", cases, accepted);
    ASSERT(cases >= 100000);
    ASSERT(accepted > 0); /* some mutations (e.g. of ts or val bytes) stay valid */
    codec_batch_clear(&b);
    for (size_t i = 0; i < 8; i++)
        buf_clear(&seeds[i]);
}

TEST_LIST{
    TEST_ENTRY(op_names),
    TEST_ENTRY(round_trip_every_op_both_wires),
    TEST_ENTRY(round_trip_binary_and_text_keys),
    TEST_ENTRY(round_trip_empty_values),
    TEST_ENTRY(round_trip_large_values),
    TEST_ENTRY(round_trip_max_src),
    TEST_ENTRY(batch_of_1),
    TEST_ENTRY(batch_of_1000),
    TEST_ENTRY(batch_reuse_after_error_and_clear_is_null_safe),
    TEST_ENTRY(fields_in_any_order_and_unknown_fields),
    TEST_ENTRY(merklekv_hand_built),
    TEST_ENTRY(exact_bytes),
    TEST_ENTRY(reject_not_cbor_or_wrong_shape),
    TEST_ENTRY(reject_batch_limits),
    TEST_ENTRY(reject_payload_over_limit),
    TEST_ENTRY(reject_trailing_and_truncated),
    TEST_ENTRY(reject_duplicate_fields),
    TEST_ENTRY(reject_missing_fields),
    TEST_ENTRY(reject_wrong_types),
    TEST_ENTRY(reject_bad_values),
    TEST_ENTRY(reject_val_and_op_mismatch),
    TEST_ENTRY(reject_tags_indefinite_and_breaks),
    TEST_ENTRY(reject_batch_with_one_bad_event),
    TEST_ENTRY(nesting_limit_in_unknown_fields),
    TEST_ENTRY(deep_nesting_rejected_without_recursion),
    TEST_ENTRY(huge_declared_lengths_rejected_quickly),
    TEST_ENTRY(fuzz_deterministic),
};

TEST_MAIN()
