/* SPDX-License-Identifier: MIT */
/*
 * codec: CBOR change events (replication.md §2); see include/arborkv/codec.h.
 *
 * Encoding reserves an upper bound once per event and writes each head with libcbor's
 * cbor_encode_* primitives straight into the struct buf, so an event costs one capacity check.
 *
 * Decoding calls cbor_stream_decode once per item head (a string item includes its bytes). Each
 * libcbor callback only records the item in a small token; the loop in codec_decode then feeds
 * that token to one explicit state machine (top item, batch element, field name, field value,
 * element of a val/op_id integer array, or an unknown field being skipped). Nothing recurses:
 * skipped values are walked with a fixed stack of remaining-item counters, CODEC_MAX_DEPTH deep.
 * Every container head is checked against the bytes left before anything else happens (each item
 * needs at least one byte, a map entry two), so a head claiming 2^63 entries costs one comparison,
 * and a string claiming more bytes than remain is reported by libcbor as truncated. Storage grows
 * only as decoded events and integer-array values actually appear.
 *
 * MerkleKV integer-array values are decoded into the batch's scratch buffer, which may move while
 * it grows; their val pointers are therefore left NULL (with val_len > 0) during decoding and
 * resolved in one pass at the end, walking the scratch in event order.
 *
 * THREADING: no global state; the callback table is const.
 */
#include "arborkv/codec.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#include "arborkv/mem.h"

#define EV_MIN_CAP 8 /* events allocated on the first decode into a batch */

/* ---- shared tables ---- */

static const char *const op_names[] = {
    [CODEC_OP_SET] = "set",   [CODEC_OP_DEL] = "del",       [CODEC_OP_INCR] = "incr",
    [CODEC_OP_DECR] = "decr", [CODEC_OP_APPEND] = "append", [CODEC_OP_PREPEND] = "prepend",
};
#define OP_COUNT (sizeof(op_names) / sizeof(op_names[0]))

const char *codec_op_name(enum codec_op op)
{
    if ((size_t) op >= OP_COUNT) return "unknown";
    return op_names[op];
}

/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. The encoder
 * uses the same test to choose text or byte string for a key, so whatever it writes as text the
 * decoder accepts.
 */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;  /* continuation bytes */
        uint32_t cp;  /* code point so far */
        uint32_t min; /* smallest code point this length may encode (overlong check) */
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
            cp = c & 0x1fu;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            cp = c & 0x0fu;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            cp = c & 0x07u;
            min = 0x10000;
        } else {
            return false; /* continuation byte, 0xc0/0xc1 or 0xf5..0xff as a lead */
        }
        if (n - i - 1 < more) return false;
        for (size_t k = 1; k <= more; k++) {
            uint8_t t = s[i + k];
            if ((t & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (t & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += more + 1;
    }
    return true;
}

/* ---- encoding ---- */

/*
 * Each writer below appends one item into space the caller reserved (codec_encode_event reserves
 * an upper bound for the whole event); a zero return from libcbor would mean that bound is wrong.
 */
static void put_head_done(struct buf *out, size_t n)
{
    if (n == 0) abort(); /* always on: the memcpy that may follow must not run past cap */
    out->len += n;
}

static void put_uint(struct buf *out, uint64_t v)
{
    put_head_done(out, cbor_encode_uint(v, out->data + out->len, out->cap - out->len));
}

static void put_null(struct buf *out)
{
    put_head_done(out, cbor_encode_null(out->data + out->len, out->cap - out->len));
}

static void put_bytes(struct buf *out, const void *p, size_t n)
{
    put_head_done(out, cbor_encode_bytestring_start(n, out->data + out->len, out->cap - out->len));
    if (n) memcpy(out->data + out->len, p, n);
    out->len += n;
}

static void put_text(struct buf *out, const void *p, size_t n)
{
    put_head_done(out, cbor_encode_string_start(n, out->data + out->len, out->cap - out->len));
    if (n) memcpy(out->data + out->len, p, n);
    out->len += n;
}

static void put_name(struct buf *out, const char *name)
{
    put_text(out, name, strlen(name));
}

/* MerkleKV's wire form of bytes: an array of uints, one per byte (1 or 2 bytes each). */
static void put_uint_array(struct buf *out, const uint8_t *p, size_t n)
{
    put_head_done(out, cbor_encode_array_start(n, out->data + out->len, out->cap - out->len));
    for (size_t i = 0; i < n; i++)
        put_uint(out, p[i]);
}

void codec_encode_event(struct buf *out, const struct codec_event *ev, enum codec_wire wire)
{
    assert(out && ev && ev->key && ev->key_len > 0 &&
           (ev->val || !ev->has_val || ev->val_len == 0));
    assert((size_t) ev->op < OP_COUNT);
    bool merklekv = wire == CODEC_WIRE_MERKLEKV;
    bool has_val = ev->has_val && ev->op != CODEC_OP_DEL;
    size_t val_len = has_val ? ev->val_len : 0;
    /*
     * Upper bound, 106 bytes plus data: 7 names 26 with heads, map head 1, v 1, op 8, key/val/src
     * heads 9 each, ts 9, op_id 33 (array form), the NUL 1; an array val takes <= 2 bytes a byte.
     */
    buf_reserve(out, 128 + ev->key_len + ev->src_len + 2 * val_len);

    put_head_done(out, cbor_encode_map_start(7, out->data + out->len, out->cap - out->len));
    put_name(out, "v");
    put_uint(out, 1);
    put_name(out, "op");
    put_name(out, op_names[ev->op]);
    put_name(out, "key");
    if (utf8_valid(ev->key, ev->key_len))
        put_text(out, ev->key, ev->key_len);
    else
        put_bytes(out, ev->key, ev->key_len);
    put_name(out, "val");
    if (!has_val)
        put_null(out); /* replication.md §2: null for del */
    else if (merklekv)
        put_uint_array(out, ev->val, val_len);
    else
        put_bytes(out, ev->val, val_len);
    put_name(out, "ts");
    put_uint(out, ev->ts);
    put_name(out, "src");
    put_text(out, ev->src, ev->src_len);
    put_name(out, "op_id");
    if (merklekv)
        put_uint_array(out, ev->op_id, CODEC_OP_ID_LEN);
    else
        put_bytes(out, ev->op_id, CODEC_OP_ID_LEN);
    assert(out->len < out->cap);
    out->data[out->len] = '\0'; /* keep struct buf's NUL-after-len invariant */
}

void codec_encode_batch_header(struct buf *out, size_t n)
{
    buf_reserve(out, 9);
    put_head_done(out, cbor_encode_array_start(n, out->data + out->len, out->cap - out->len));
    out->data[out->len] = '\0';
}

/* ---- batch storage ---- */

void codec_batch_init(struct codec_batch *b)
{
    b->ev = NULL;
    b->n = 0;
    b->cap = 0;
    buf_init(&b->scratch);
}

void codec_batch_clear(struct codec_batch *b)
{
    if (!b) return;
    free(b->ev);
    buf_clear(&b->scratch);
    codec_batch_init(b);
}

/* ---- decoding: tokens from libcbor's callbacks ---- */

enum tok_kind {
    TOK_NONE = 0, /* no callback ran */
    TOK_UINT,
    TOK_NEGINT,
    TOK_BYTES,
    TOK_TEXT,
    TOK_ARRAY,
    TOK_MAP,
    TOK_TAG,
    TOK_FLOAT,
    TOK_BOOL,
    TOK_NULL,
    TOK_UNDEF,
    TOK_INDEF, /* start of an indefinite-length string, array or map */
    TOK_BREAK,
};

static const char *const tok_names[] = {
    [TOK_NONE] = "nothing",
    [TOK_UINT] = "an unsigned integer",
    [TOK_NEGINT] = "a negative integer",
    [TOK_BYTES] = "a byte string",
    [TOK_TEXT] = "a text string",
    [TOK_ARRAY] = "an array",
    [TOK_MAP] = "a map",
    [TOK_TAG] = "a tag",
    [TOK_FLOAT] = "a float",
    [TOK_BOOL] = "a boolean",
    [TOK_NULL] = "null",
    [TOK_UNDEF] = "undefined",
    [TOK_INDEF] = "an indefinite-length item",
    [TOK_BREAK] = "a break",
};

struct token {
    enum tok_kind kind; /* what the last callback saw */
    uint64_t u;         /* TOK_UINT value, TOK_ARRAY/TOK_MAP entry count */
    const uint8_t *p;   /* [borrow] TOK_BYTES/TOK_TEXT contents, inside the payload */
    size_t len;         /* TOK_BYTES/TOK_TEXT length in bytes */
};

static void on_uint8(void *ctx, uint8_t v)
{
    struct token *t = ctx;
    t->kind = TOK_UINT;
    t->u = v;
}

static void on_uint16(void *ctx, uint16_t v)
{
    on_uint8(ctx, 0);
    ((struct token *) ctx)->u = v;
}

static void on_uint32(void *ctx, uint32_t v)
{
    on_uint8(ctx, 0);
    ((struct token *) ctx)->u = v;
}

static void on_uint64(void *ctx, uint64_t v)
{
    on_uint8(ctx, 0);
    ((struct token *) ctx)->u = v;
}

static void set_kind(void *ctx, enum tok_kind kind)
{
    ((struct token *) ctx)->kind = kind;
}

static void on_negint8(void *ctx, uint8_t v)
{
    UNUSED(v);
    set_kind(ctx, TOK_NEGINT);
}

static void on_negint16(void *ctx, uint16_t v)
{
    UNUSED(v);
    set_kind(ctx, TOK_NEGINT);
}

static void on_negint32(void *ctx, uint32_t v)
{
    UNUSED(v);
    set_kind(ctx, TOK_NEGINT);
}

static void on_negint64(void *ctx, uint64_t v)
{
    UNUSED(v);
    set_kind(ctx, TOK_NEGINT);
}

static void on_string_item(void *ctx, enum tok_kind kind, cbor_data p, size_t len)
{
    struct token *t = ctx;
    t->kind = kind;
    t->p = p;
    t->len = len;
}

static void on_bytes(void *ctx, cbor_data p, size_t len)
{
    on_string_item(ctx, TOK_BYTES, p, len);
}

static void on_text(void *ctx, cbor_data p, size_t len)
{
    on_string_item(ctx, TOK_TEXT, p, len);
}

static void on_collection(void *ctx, enum tok_kind kind, size_t n)
{
    struct token *t = ctx;
    t->kind = kind;
    t->u = n;
}

static void on_array(void *ctx, size_t n)
{
    on_collection(ctx, TOK_ARRAY, n);
}

static void on_map(void *ctx, size_t n)
{
    on_collection(ctx, TOK_MAP, n);
}

static void on_indef(void *ctx)
{
    set_kind(ctx, TOK_INDEF);
}

static void on_tag(void *ctx, uint64_t v)
{
    UNUSED(v);
    set_kind(ctx, TOK_TAG);
}

static void on_float(void *ctx, float v)
{
    UNUSED(v);
    set_kind(ctx, TOK_FLOAT);
}

static void on_double(void *ctx, double v)
{
    UNUSED(v);
    set_kind(ctx, TOK_FLOAT);
}

static void on_bool(void *ctx, bool v)
{
    UNUSED(v);
    set_kind(ctx, TOK_BOOL);
}

static void on_null(void *ctx)
{
    set_kind(ctx, TOK_NULL);
}

static void on_undef(void *ctx)
{
    set_kind(ctx, TOK_UNDEF);
}

static void on_break(void *ctx)
{
    set_kind(ctx, TOK_BREAK);
}

/*
 * libcbor 0.8's callbacks.h swaps the comments on some members (byte_string_start is the
 * *indefinite* start, byte_string the definite string); the member types are what count.
 */
static const struct cbor_callbacks token_callbacks = {
    .uint8 = on_uint8,
    .uint16 = on_uint16,
    .uint32 = on_uint32,
    .uint64 = on_uint64,
    .negint8 = on_negint8,
    .negint16 = on_negint16,
    .negint32 = on_negint32,
    .negint64 = on_negint64,
    .byte_string = on_bytes,
    .byte_string_start = on_indef,
    .string = on_text,
    .string_start = on_indef,
    .array_start = on_array,
    .indef_array_start = on_indef,
    .map_start = on_map,
    .indef_map_start = on_indef,
    .tag = on_tag,
    .float2 = on_float,
    .float4 = on_float,
    .float8 = on_double,
    .undefined = on_undef,
    .null = on_null,
    .boolean = on_bool,
    .indef_break = on_break,
};

/* ---- decoding: the state machine ---- */

enum field {
    F_V = 0,
    F_OP,
    F_KEY,
    F_VAL,
    F_TS,
    F_SRC,
    F_OP_ID,
    F_PREV,
    F_TTL,
    F_COUNT,
};

static const char *const field_names[F_COUNT] = {
    [F_V] = "v",     [F_OP] = "op",       [F_KEY] = "key",   [F_VAL] = "val", [F_TS] = "ts",
    [F_SRC] = "src", [F_OP_ID] = "op_id", [F_PREV] = "prev", [F_TTL] = "ttl",
};

/* codec.h: op, key, ts, src and op_id are required; val depends on op. */
#define REQUIRED_FIELDS \
    ((1u << F_OP) | (1u << F_KEY) | (1u << F_TS) | (1u << F_SRC) | (1u << F_OP_ID))

enum dstate {
    ST_TOP,   /* expecting the top item: an event map or a batch array */
    ST_BATCH, /* expecting the next event map of a batch */
    ST_NAME,  /* expecting a field name (map key) of the current event */
    ST_VALUE, /* expecting the value of known field d->field */
    ST_ARRAY, /* expecting the next uint 0..255 of a val/op_id array */
    ST_SKIP,  /* walking items that are ignored (unknown fields) */
    ST_DONE,  /* top item complete */
};

struct decoder {
    const uint8_t *end;                  /* one past the payload */
    const uint8_t *next;                 /* first byte after the current token */
    struct codec_batch *b;               /* output; b->ev[b->n] is the event being decoded */
    struct token tok;                    /* the current token */
    enum dstate st;                      /* what the next token must be */
    bool batch;                          /* top item is an array */
    bool in_event;                       /* inside an event map: reasons name the event */
    bool failed;                         /* a reason was recorded */
    bool val_null;                       /* current event: val was null */
    unsigned seen;                       /* current event: bit per enum field present */
    enum field field;                    /* ST_VALUE/ST_ARRAY: the field being read */
    size_t events_left;                  /* events still expected, the current one included */
    uint64_t pairs_left;                 /* entries left in the current event map */
    size_t arr_left;                     /* ST_ARRAY: elements left */
    size_t arr_i;                        /* ST_ARRAY: elements read */
    unsigned skip_depth;                 /* ST_SKIP: levels in use in skip_left */
    uint64_t skip_left[CODEC_MAX_DEPTH]; /* ST_SKIP: items left per level, [0] = event map */
    char *why;                           /* [borrow] caller's reason buffer, or NULL */
    size_t whylen;                       /* bytes at why */
};

/*
 * Records the first failure reason and returns -EBADMSG. Reasons are one line: callers never
 * pass payload bytes, only numbers and names from this file.
 */
__attribute__((format(printf, 2, 3))) static int fail(struct decoder *d, const char *fmt, ...)
{
    if (d->failed) return -EBADMSG;
    d->failed = true;
    if (!d->why || d->whylen == 0) return -EBADMSG;
    size_t off = 0;
    if (d->in_event) {
        int n = snprintf(d->why, d->whylen, "event %zu: ", d->b->n);
        off = n < 0 ? 0 : (size_t) n;
        if (off >= d->whylen) return -EBADMSG;
    }
    va_list ap;
    va_start(ap, fmt);
    (void) vsnprintf(d->why + off, d->whylen - off, fmt, ap);
    va_end(ap);
    return -EBADMSG;
}

static size_t bytes_left(const struct decoder *d)
{
    return (size_t) (d->end - d->next);
}

/*
 * Rejects a container head whose n entries cannot fit in the bytes that follow it: every item
 * takes at least one byte, so this is the whole defence against heads claiming 2^63 entries.
 */
static int check_count(struct decoder *d, uint64_t n, unsigned items_per_entry, const char *what)
{
    if (n <= bytes_left(d) / items_per_entry) return 0;
    return fail(d, "truncated: %s declares %llu entries but only %zu bytes follow", what,
                (unsigned long long) n, bytes_left(d));
}

/* Rejects items that are never valid anywhere: tags, indefinite lengths, stray breaks. */
static int check_allowed(struct decoder *d)
{
    switch (d->tok.kind) {
    case TOK_TAG:
        return fail(d, "CBOR tags are not accepted");
    case TOK_INDEF:
        return fail(d, "indefinite-length items are not accepted");
    case TOK_BREAK:
        return fail(d, "unexpected CBOR break");
    default:
        return 0;
    }
}

static int wrong_type(struct decoder *d, const char *want)
{
    return fail(d, "field '%s' must be %s, got %s", field_names[d->field], want,
                tok_names[d->tok.kind]);
}

/* Finishes the current event map: required fields, the val/op rule, then the next state. */
static int end_event(struct decoder *d)
{
    struct codec_event *ev = &d->b->ev[d->b->n];
    unsigned missing = REQUIRED_FIELDS & ~d->seen;
    for (unsigned f = 0; missing && f < F_COUNT; f++) {
        if (missing & (1u << f)) return fail(d, "missing field '%s'", field_names[f]);
    }
    bool val_given = (d->seen & (1u << F_VAL)) && !d->val_null;
    if (ev->op == CODEC_OP_DEL) {
        if (val_given) return fail(d, "field 'val' must be null or absent for 'del'");
        ev->has_val = false;
        ev->val = NULL;
        ev->val_len = 0;
    } else {
        if (!val_given) return fail(d, "field 'val' is required for '%s'", op_names[ev->op]);
        ev->has_val = true;
    }
    d->b->n++;
    d->in_event = false;
    d->st = d->batch && --d->events_left > 0 ? ST_BATCH : ST_DONE;
    return 0;
}

/* One entry (name and value) of the current event map is complete. */
static int end_field(struct decoder *d)
{
    if (d->pairs_left > 0) d->pairs_left--;
    if (d->pairs_left == 0) return end_event(d);
    d->st = ST_NAME;
    return 0;
}

static int begin_event(struct decoder *d, uint64_t pairs)
{
    struct codec_batch *b = d->b;
    int rc = check_count(d, pairs, 2, "event map");
    if (rc < 0) return rc;
    if (b->n == b->cap) {
        /* Grows with events actually present, never with a count the payload declares. */
        size_t cap = b->cap ? b->cap * 2 : EV_MIN_CAP;
        b->ev = xrealloc(b->ev, cap * sizeof(*b->ev));
        b->cap = cap;
    }
    memset(&b->ev[b->n], 0, sizeof(b->ev[b->n]));
    d->in_event = true;
    d->pairs_left = pairs;
    d->seen = 0;
    d->val_null = false;
    d->st = ST_NAME;
    return pairs == 0 ? end_event(d) : 0; /* an empty map fails there: fields are missing */
}

/* ST_TOP and ST_BATCH. */
static int on_top_or_batch_item(struct decoder *d)
{
    int rc = check_allowed(d);
    if (rc < 0) return rc;
    if (d->tok.kind == TOK_MAP) return begin_event(d, d->tok.u);
    if (d->st == ST_BATCH)
        return fail(d, "event %zu: must be a map, got %s", d->b->n, tok_names[d->tok.kind]);
    if (d->tok.kind != TOK_ARRAY)
        return fail(d, "payload must be a map or an array of maps, got %s", tok_names[d->tok.kind]);
    uint64_t n = d->tok.u;
    if (n == 0) return fail(d, "empty batch");
    if (n > CODEC_MAX_EVENTS)
        return fail(d, "batch of %llu events is over the limit of %d", (unsigned long long) n,
                    CODEC_MAX_EVENTS);
    rc = check_count(d, n, 1, "batch");
    if (rc < 0) return rc;
    d->batch = true;
    d->events_left = (size_t) n;
    d->st = ST_BATCH;
    return 0;
}

/* Starts skipping n whole items; the tokens that follow are fed to on_skip_item. */
static void skip_start(struct decoder *d, uint64_t n)
{
    d->skip_depth = 1;
    d->skip_left[0] = n;
    d->st = ST_SKIP;
}

/* ST_SKIP: any item but tags and indefinite lengths, containers nested <= CODEC_MAX_DEPTH. */
static int on_skip_item(struct decoder *d)
{
    int rc = check_allowed(d);
    if (rc < 0) return rc;
    if ((d->tok.kind == TOK_ARRAY || d->tok.kind == TOK_MAP) && d->tok.u > 0) {
        bool map = d->tok.kind == TOK_MAP;
        rc = check_count(d, d->tok.u, map ? 2 : 1, map ? "map" : "array");
        if (rc < 0) return rc;
        /* This container's depth: the event map's (1, or 2 in a batch) plus skip_depth. */
        if ((d->batch ? 2u : 1u) + d->skip_depth > CODEC_MAX_DEPTH)
            return fail(d, "items nested deeper than %d levels", CODEC_MAX_DEPTH);
        /* check_count bounded the count by the payload size, so doubling cannot overflow. */
        d->skip_left[d->skip_depth++] = map ? 2 * d->tok.u : d->tok.u;
        return 0;
    }
    /* A whole item ended: count it on its level, and so every container it completes. */
    while (d->skip_depth > 0) {
        if (--d->skip_left[d->skip_depth - 1] > 0) return 0;
        d->skip_depth--;
    }
    return end_field(d);
}

/* ST_NAME: a field name. Non-text keys make the entry an unknown field like any other. */
static int on_name(struct decoder *d)
{
    int rc = check_allowed(d);
    if (rc < 0) return rc;
    if (d->tok.kind != TOK_TEXT) {
        skip_start(d, 2); /* this key (possibly a container) and its value */
        return on_skip_item(d);
    }
    for (unsigned f = 0; f < F_COUNT; f++) {
        const char *name = field_names[f];
        if (d->tok.len == strlen(name) && memcmp(d->tok.p, name, d->tok.len) == 0) {
            if (d->seen & (1u << f)) return fail(d, "duplicate field '%s'", name);
            d->seen |= 1u << f;
            d->field = (enum field) f;
            d->st = ST_VALUE;
            return 0;
        }
    }
    skip_start(d, 1); /* replication.md §2: unknown fields are ignored */
    return 0;
}

/* A key or src string: 1..max bytes, and valid UTF-8 when it is text. */
static int check_string(struct decoder *d, size_t max)
{
    if (d->tok.len == 0) return fail(d, "field '%s' must not be empty", field_names[d->field]);
    if (d->tok.len > max)
        return fail(d, "field '%s' is %zu bytes, over the limit of %zu", field_names[d->field],
                    d->tok.len, max);
    if (d->tok.kind == TOK_TEXT && !utf8_valid(d->tok.p, d->tok.len))
        return fail(d, "field '%s' is not valid UTF-8 text", field_names[d->field]);
    return 0;
}

/* The head of a MerkleKV integer array for val or op_id. */
static int begin_array(struct decoder *d)
{
    uint64_t n = d->tok.u;
    int rc = check_count(d, n, 1, "array");
    if (rc < 0) return rc;
    if (d->field == F_OP_ID && n != CODEC_OP_ID_LEN)
        return fail(d, "field 'op_id' must be %d bytes, got an array of %llu", CODEC_OP_ID_LEN,
                    (unsigned long long) n);
    d->arr_left = (size_t) n;
    d->arr_i = 0;
    if (d->field == F_VAL) {
        struct codec_event *ev = &d->b->ev[d->b->n];
        buf_reserve(&d->b->scratch, d->arr_left); /* bounded by the bytes that follow */
        ev->val = NULL;                           /* resolved after decoding; see top of file */
        ev->val_len = d->arr_left;
    }
    if (d->arr_left == 0) return end_field(d);
    d->st = ST_ARRAY;
    return 0;
}

/* ST_ARRAY: one element of a val/op_id integer array. */
static int on_array_item(struct decoder *d)
{
    if (d->tok.kind != TOK_UINT || d->tok.u > 255)
        return fail(d, "field '%s' element %zu must be an unsigned integer 0..255, got %s",
                    field_names[d->field], d->arr_i,
                    d->tok.kind == TOK_UINT ? "a larger one" : tok_names[d->tok.kind]);
    uint8_t byte = (uint8_t) d->tok.u;
    if (d->field == F_VAL) {
        struct buf *s = &d->b->scratch;
        s->data[s->len++] = byte; /* begin_array reserved the room */
    } else {
        d->b->ev[d->b->n].op_id[d->arr_i] = byte;
    }
    d->arr_i++;
    if (--d->arr_left > 0) return 0;
    if (d->field == F_VAL) d->b->scratch.data[d->b->scratch.len] = '\0'; /* buf invariant */
    return end_field(d);
}

/* ST_VALUE: the value of a known field. */
static int on_value(struct decoder *d)
{
    struct codec_event *ev = &d->b->ev[d->b->n];
    const struct token *t = &d->tok;
    int rc = check_allowed(d);
    if (rc < 0) return rc;
    switch (d->field) {
    case F_V:
        if (t->kind != TOK_UINT) return wrong_type(d, "an unsigned integer");
        if (t->u != 1) return fail(d, "field 'v' must be 1, got %llu", (unsigned long long) t->u);
        break;
    case F_OP: {
        if (t->kind != TOK_TEXT) return wrong_type(d, "a text string");
        /* Only the ASCII names match, so this is also the UTF-8 check. */
        size_t op = 0;
        while (op < OP_COUNT &&
               !(t->len == strlen(op_names[op]) && memcmp(t->p, op_names[op], t->len) == 0))
            op++;
        if (op == OP_COUNT) return fail(d, "field 'op' is not a known operation");
        ev->op = (enum codec_op) op;
        break;
    }
    case F_KEY:
        if (t->kind != TOK_TEXT && t->kind != TOK_BYTES)
            return wrong_type(d, "a text or byte string");
        rc = check_string(d, CODEC_MAX_KEY);
        if (rc < 0) return rc;
        ev->key = t->p;
        ev->key_len = t->len;
        break;
    case F_VAL:
        if (t->kind == TOK_ARRAY) return begin_array(d);
        if (t->kind == TOK_NULL) {
            d->val_null = true;
        } else if (t->kind == TOK_BYTES) {
            ev->val = t->p; /* never NULL, even when empty: NULL marks scratch values */
            ev->val_len = t->len;
        } else {
            return wrong_type(d, "a byte string, an array of uints or null");
        }
        break;
    case F_TS:
        if (t->kind != TOK_UINT) return wrong_type(d, "an unsigned integer");
        ev->ts = t->u;
        break;
    case F_SRC:
        if (t->kind != TOK_TEXT) return wrong_type(d, "a text string");
        rc = check_string(d, CODEC_MAX_SRC);
        if (rc < 0) return rc;
        ev->src = (const char *) t->p;
        ev->src_len = t->len;
        break;
    case F_OP_ID:
        if (t->kind == TOK_ARRAY) return begin_array(d);
        if (t->kind != TOK_BYTES) return wrong_type(d, "a byte string or an array of uints");
        if (t->len != CODEC_OP_ID_LEN)
            return fail(d, "field 'op_id' must be %d bytes, got %zu", CODEC_OP_ID_LEN, t->len);
        memcpy(ev->op_id, t->p, CODEC_OP_ID_LEN);
        break;
    case F_PREV:
        if (t->kind != TOK_NULL) return wrong_type(d, "null");
        break;
    case F_TTL:
        /* Accepted and ignored: arborkv has no expiry. */
        if (t->kind != TOK_NULL && t->kind != TOK_UINT) return wrong_type(d, "null or a uint");
        break;
    case F_COUNT:
        abort(); /* unreachable: on_name only sets real fields */
    }
    return end_field(d);
}

static int step(struct decoder *d)
{
    switch (d->st) {
    case ST_TOP:
    case ST_BATCH:
        return on_top_or_batch_item(d);
    case ST_NAME:
        return on_name(d);
    case ST_VALUE:
        return on_value(d);
    case ST_ARRAY:
        return on_array_item(d);
    case ST_SKIP:
        return on_skip_item(d);
    case ST_DONE:
        break;
    }
    abort(); /* unreachable: the loop stops at ST_DONE */
}

/* Points the integer-array values at their bytes in the (now final) scratch buffer. */
static void resolve_scratch(struct codec_batch *b)
{
    size_t off = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct codec_event *ev = &b->ev[i];
        if (ev->has_val && ev->val == NULL && ev->val_len > 0) {
            ev->val = b->scratch.data + off;
            off += ev->val_len;
        }
    }
    assert(off == b->scratch.len);
}

/* Walks the payload one item head at a time; returns 0 or -EBADMSG with d's reason set. */
static int walk(struct decoder *d, const uint8_t *payload, size_t len)
{
    const uint8_t *p = payload;
    d->end = payload + len;
    while (d->st != ST_DONE) {
        if (p == d->end) return fail(d, "truncated: payload ends inside an item");
        d->tok.kind = TOK_NONE;
        struct cbor_decoder_result r =
                cbor_stream_decode(p, (size_t) (d->end - p), &token_callbacks, &d->tok);
        if (r.status == CBOR_DECODER_NEDATA)
            return fail(d, "truncated: item at byte %zu runs past the end", (size_t) (p - payload));
        if (r.status != CBOR_DECODER_FINISHED || d->tok.kind == TOK_NONE || r.read == 0 ||
            r.read > (size_t) (d->end - p))
            return fail(d, "invalid CBOR at byte %zu", (size_t) (p - payload));
        p += r.read;
        d->next = p;
        int rc = step(d);
        if (rc < 0) return rc;
    }
    if (p != d->end) return fail(d, "%zu trailing bytes after the top item", (size_t) (d->end - p));
    return 0;
}

int codec_decode(const uint8_t *payload, size_t len, struct codec_batch *b, char *why,
                 size_t whylen)
{
    assert((payload || len == 0) && b);
    struct decoder d;
    memset(&d, 0, sizeof(d));
    d.b = b;
    d.why = why;
    d.whylen = whylen;
    d.st = ST_TOP;
    b->n = 0;
    buf_reset(&b->scratch);
    if (why && whylen) why[0] = '\0';

    assert(payload != NULL || len == 0);
    int rc;
    if (len == 0)
        rc = fail(&d, "empty payload");
    else if (len > CODEC_MAX_PAYLOAD)
        rc = fail(&d, "payload of %zu bytes is over the limit of %u", len, CODEC_MAX_PAYLOAD);
    else
        rc = walk(&d, payload, len);
    if (rc < 0) {
        b->n = 0;
        buf_reset(&b->scratch);
        return rc;
    }
    resolve_scratch(b);
    return 0;
}
