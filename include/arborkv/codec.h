/* SPDX-License-Identifier: MIT */
/*
 * codec: CBOR change events (replication.md §2), encoded and decoded with libcbor.
 *
 * A payload is one event (a CBOR map) or a batch (a CBOR array of maps). Encoding writes
 * definite-length items straight into a struct buf with libcbor's cbor_encode_* primitives (no
 * item trees). Decoding is strict and total: it walks the payload with libcbor's streaming
 * decoder (cbor_stream_decode), never allocates in proportion to a length the payload claims,
 * never recurses, bounds nesting, and either yields every event of the payload or rejects the
 * whole payload with a reason. Returned events point into the payload (byte/text strings) or into
 * the batch's own storage (MerkleKV integer-array values); nothing is copied otherwise.
 *
 * Accepted event map (fields in any order, unknown fields ignored whatever their type, each known
 * field at most once):
 *   v      uint, must be 1 when present (absent is accepted: MerkleKV may omit it)
 *   op     text: "set" "del" "incr" "decr" "append" "prepend"            (required)
 *   key    text or byte string, 1..CODEC_MAX_KEY bytes                       (required)
 *   val    byte string, or array of uints 0..255 (MerkleKV), or null;
 *          required and non-null for every op but "del"; null or absent for "del"
 *   ts     uint (64-bit)                                                    (required)
 *   src    text (1..CODEC_MAX_SRC bytes)                                   (required)
 *   op_id  byte string of 16 bytes, or array of 16 uints 0..255          (required)
 *   prev   null or absent (anything else: rejected)
 *   ttl    null, absent or uint (accepted and ignored: arborkv has no expiry)
 *
 * Text in op, src and key must be valid UTF-8 (libcbor does not check it; the codec does, and the
 * encoder writes a key as text only when it is). A map key that is not a text string names an
 * unknown field, so it is skipped with its value. Rejected anywhere in the payload, known field or
 * not: tags (major type 6); indefinite-length strings, arrays and maps (this encoder never writes
 * them, and serde-based encoders such as MerkleKV's write definite lengths for structs and byte
 * vectors); containers nested deeper than CODEC_MAX_DEPTH; heads declaring more entries than
 * bytes remain. Integers of any width, floats, booleans, undefined and negative integers are fine
 * inside unknown fields and wrong types in known ones; an element of a val/op_id array may use any
 * integer width as long as its value is 0..255.
 *
 * THREADING: pure functions; safe from any thread.
 */
#ifndef ARBORKV_CODEC_H
#define ARBORKV_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/buf.h"

#define CODEC_OP_ID_LEN   16
#define CODEC_MAX_PAYLOAD (64u * 1024 * 1024) /* bytes in one MQTT payload we decode */
#define CODEC_MAX_EVENTS  100000              /* events in one batch */
#define CODEC_MAX_KEY     (1024u * 1024)      /* bytes in a key (line protocol's line limit) */
#define CODEC_MAX_SRC     256                 /* bytes in a node id */
#define CODEC_MAX_DEPTH   16                  /* nesting of arrays/maps, batch array = 1 */

enum codec_op {
    CODEC_OP_SET = 0,
    CODEC_OP_DEL,
    CODEC_OP_INCR,
    CODEC_OP_DECR,
    CODEC_OP_APPEND,
    CODEC_OP_PREPEND,
};

enum codec_wire {
    CODEC_WIRE_CBOR = 0, /* byte strings for val and op_id (default) */
    CODEC_WIRE_MERKLEKV, /* val and op_id as arrays of uints 0..255, as MerkleKV writes them */
};

struct codec_event {
    enum codec_op op;
    const uint8_t *key; /* [borrow] key bytes */
    size_t key_len;
    const uint8_t *val; /* [borrow] value bytes; NULL for a delete (and may be NULL if len 0) */
    size_t val_len;
    bool has_val;    /* false: delete (tombstone) */
    uint64_t ts;     /* HLC ns */
    const char *src; /* [borrow] node id bytes, NOT NUL-terminated */
    size_t src_len;
    uint8_t op_id[CODEC_OP_ID_LEN];
};

/* A decoded payload: n events. Pointers are valid while the payload and the batch live. */
struct codec_batch {
    struct codec_event *ev; /* heap, owned */
    size_t n;
    size_t cap;
    struct buf scratch; /* MerkleKV integer-array values, decoded to bytes (owned) */
};

/* Returns the wire name of op ("set", ...). */
const char *codec_op_name(enum codec_op op);

/* Appends one event map to out (keys in the order v, op, key, val, ts, src, op_id). The key is
 * written as text when it is valid UTF-8, else as a byte string. */
void codec_encode_event(struct buf *out, const struct codec_event *ev, enum codec_wire wire);

/* Appends a definite-length array header for a batch of n events. */
void codec_encode_batch_header(struct buf *out, size_t n);

void codec_batch_init(struct codec_batch *b);
/* Frees the batch's storage and reinitializes it. NULL-safe. */
void codec_batch_clear(struct codec_batch *b);

/*
 * Decodes payload[0..len) into b (which is reset first; its storage is reused across calls).
 * Returns 0 with b->n >= 1 events, or -EBADMSG with a one-line reason in why (whylen bytes,
 * NUL-terminated, e.g. "event 3: field 'op_id' must be 16 bytes") and b->n == 0; every
 * rejection, over-limit ones included, is -EBADMSG. On success why is set to "". why may be NULL
 * (whylen 0). An empty batch (array of 0 events) is rejected. Trailing bytes after the top item
 * are rejected. Payloads over CODEC_MAX_PAYLOAD are rejected before any byte is read.
 */
int codec_decode(const uint8_t *payload, size_t len, struct codec_batch *b, char *why,
                 size_t whylen);

#endif
