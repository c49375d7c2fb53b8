/* SPDX-License-Identifier: MIT */
/*
 * ae_msg: the binary messages of anti-entropy (docs/anti-entropy.md, "Messages"), encoded and
 * decoded. Sessions (ae.c) and SYNC (mirror.c) speak them; this module only knows their bytes:
 * no tree, no store, no session, no transport, so every rule of the format is in one place and
 * can be tested alone.
 *
 * Wire format. All integers are little-endian; a message is a header and the body of its type:
 *
 *   header     'A' 'E' | version u8 = 1 | type u8 | session u64 | from_len u8 | from (node id)
 *   NODES_REQ  (1)  level u8 | n u32 | n × index u32           children of these nodes, please
 *   NODES      (2)  fanout u16 | depth u8 | level u8 | n u32 | n × (index u32 | F × digest[32])
 *   RECS_REQ   (3)  n u32 | n × leaf u32 | has_after u8 | after_len u32 | after key
 *   RECS       (4)  flags u8 (1 more, 2 push) | after_len u32 | after key | count u32
 *                   | count × record
 *   DROP       (5)  count u32 | count × record     records the sender refused as purged
 *   record          key_len u32 | key | tombstone u8 | ts u64 | op_id[16] | value_len u32 | value
 *
 * F is the fanout the message itself states. A NODES message answers a NODES_REQ with the same
 * session, level and indexes, in order. A RECS_REQ with n = 0 asks for every record (SYNC's full
 * transfer). In a RECS page with the `more` flag, `after` is the paging cursor (the last key of
 * the page); `push` marks records an initiator pushes, not an answer. DROP carries session 0.
 * The same bytes travel through the broker ({prefix}/ae/{node id}) and inside ARBORKV.AE over a
 * client connection (SYNC), so nothing here may change without a new version.
 *
 * Decoding is strict, and total on any input: a message is rejected (-EBADMSG) when it is
 * truncated or has bytes left over, when its magic, version or type is unknown, when `from` is
 * empty or holds NUL, '/', '+' or '#' (it names an MQTT topic), when a count exceeds its limit
 * (AE_MAX_NODES_REQ, AE_MAX_LEAVES_REQ) or claims more bytes than the message holds, when RECS
 * has unknown flags or RECS_REQ a has_after other than 0 or 1, and when a record has a tombstone
 * flag other than 0 or 1 or a tombstone with a value. The records of a RECS or DROP body are
 * decoded one at a time (ae_recs_next), so a page is never held twice; a bad record is found when
 * it is reached. What the numbers mean (a level deeper than the tree, a leaf out of range, an
 * answer to another request) is the caller's to judge. Decoded keys, values, digests and index
 * arrays point into the message: nothing is copied or allocated.
 *
 * THREADING: pure functions; safe from any thread.
 */
#ifndef ARBORKV_AE_MSG_H
#define ARBORKV_AE_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/buf.h"
#include "arborkv/record.h"

#define AE_MSG_VERSION    1
#define AE_MSG_FROM_MAX   255                /* bytes of the sender's node id (from_len is a u8) */
#define AE_MSG_DIGEST_LEN 32                 /* a tree node's digest (MERKLE_DIGEST_LEN) */
#define AE_MSG_RECORD_MIN 33                 /* an empty key and value: 4 + 1 + 8 + 16 + 4 */
#define AE_MAX_MESSAGE    (4u * 1024 * 1024) /* bytes of one message received from the broker */
#define AE_MAX_NODES_REQ  512                /* nodes whose children one request asks for */
/* Leaf buckets one records request covers. Every chunk of buckets costs both sides a scan of
 * their table (docs/anti-entropy.md), so chunks should be large (256 made d = 10,000 of 1,000,000
 * take 37 scans per side and ~20 s, docs/benchmarks.md); but the initiator pushes a chunk's
 * records in one loop turn, so they bound that turn's work and the messages queued at once
 * (~2 MiB at 15 records per bucket). */
#define AE_MAX_LEAVES_REQ 2048

enum ae_msg_type {
    AE_MSG_NODES_REQ = 1,
    AE_MSG_NODES = 2,
    AE_MSG_RECS_REQ = 3,
    AE_MSG_RECS = 4,
    AE_MSG_DROP = 5,
};

/* RECS flags */
enum { AE_MSG_F_MORE = 1, AE_MSG_F_PUSH = 2 };

/* ---- encoding: each ae_msg_put_<type> resets out and writes a whole message ----------------- */
/* from: the sender's node id, 1..AE_MSG_FROM_MAX bytes (longer ones are cut; conf checks ids). */

/* NODES_REQ: the children of the nodes idx[0..n) of `level`, please. */
void ae_msg_put_nodes_req(struct buf *out, uint64_t sid, const char *from, unsigned level,
                          const uint32_t *idx, size_t n);

/*
 * NODES: writes the header and the counts; then the caller appends the n entries, in the order
 * of the request, with ae_msg_put_nodes_entry. That call returns where the entry's fanout
 * digests go (fanout × AE_MSG_DIGEST_LEN bytes, zeroed; valid until out next changes), so the
 * answerer writes them straight from its tree.
 */
void ae_msg_put_nodes(struct buf *out, uint64_t sid, const char *from, unsigned fanout,
                      unsigned depth, unsigned level, uint32_t n);
uint8_t *ae_msg_put_nodes_entry(struct buf *out, uint32_t index, unsigned fanout);

/* RECS_REQ: the records of leaf buckets leaves[0..n) (n == 0: every record), after key `after`
 * when has_after. (The name predates this module; SYNC calls it.) */
void ae_recs_req(uint64_t sid, const char *from, const uint32_t *leaves, uint32_t n,
                 const uint8_t *after, size_t after_len, bool has_after, struct buf *out);

/* Appends one record in the record layout to b: the body of a RECS or DROP message is built
 * first (its records counted by the caller), then wrapped by ae_msg_put_recs or _drop. */
void ae_msg_put_rec(struct buf *b, const struct store_rec *r);

/* RECS: flags (AE_MSG_F_*), the cursor `after`, and count records already encoded in
 * recs[0..recs_len) by ae_msg_put_rec. */
void ae_msg_put_recs(struct buf *out, uint64_t sid, const char *from, unsigned flags,
                     const uint8_t *after, size_t after_len, uint32_t count, const uint8_t *recs,
                     size_t recs_len);

/* DROP (session 0): count records encoded in recs[0..recs_len) by ae_msg_put_rec. */
void ae_msg_put_drop(struct buf *out, const char *from, uint32_t count, const uint8_t *recs,
                     size_t recs_len);

/* ---- decoding: ae_msg_open reads the header, ae_msg_get_<type> the body of that type -------- */

/* A message whose header was read. */
struct ae_msg {
    enum ae_msg_type type;
    uint64_t sid;                   /* session id */
    char from[AE_MSG_FROM_MAX + 1]; /* sender's node id, NUL-terminated */
    const uint8_t *body;            /* [borrow] the bytes after the header */
    size_t body_len;                /* bytes at body */
};

/* Reads the header of msg[0..len). Returns 0, or -EBADMSG (bad magic, version or type, unusable
 * sender id, truncated). The size limit of a message (AE_MAX_MESSAGE) is the receiver's. */
int ae_msg_open(struct ae_msg *m, const uint8_t *msg, size_t len);

/* NODES_REQ */
struct ae_msg_nodes_req {
    unsigned level;     /* level of the nodes */
    uint32_t n;         /* nodes, <= AE_MAX_NODES_REQ */
    const uint8_t *idx; /* [borrow] n indexes (ae_msg_nodes_req_index) */
};
int ae_msg_get_nodes_req(const struct ae_msg *m, struct ae_msg_nodes_req *q);  /* 0 or -EBADMSG */
uint32_t ae_msg_nodes_req_index(const struct ae_msg_nodes_req *q, uint32_t i); /* i < n */

/* NODES */
struct ae_msg_nodes {
    unsigned fanout;        /* the sender's tree shape */
    unsigned depth;         /* (compare with the receiver's before using the digests) */
    unsigned level;         /* level of the nodes whose children these are */
    uint32_t n;             /* entries, <= AE_MAX_NODES_REQ */
    const uint8_t *entries; /* [borrow] n entries (ae_msg_nodes_entry) */
};
int ae_msg_get_nodes(const struct ae_msg *m, struct ae_msg_nodes *a); /* 0 or -EBADMSG */
/* Entry i < n: returns its node index; *digests ([borrow]) receives its fanout children's
 * digests, AE_MSG_DIGEST_LEN bytes each. */
uint32_t ae_msg_nodes_entry(const struct ae_msg_nodes *a, uint32_t i, const uint8_t **digests);

/* RECS_REQ */
struct ae_msg_recs_req {
    uint32_t n;            /* leaf buckets, <= AE_MAX_LEAVES_REQ; 0: every record */
    const uint8_t *leaves; /* [borrow] n leaf indexes (ae_msg_recs_req_leaf) */
    bool has_after;        /* start after key `after` */
    struct slice after;    /* [borrow] (sent, possibly non-empty, even without has_after) */
};
int ae_msg_get_recs_req(const struct ae_msg *m, struct ae_msg_recs_req *q); /* 0 or -EBADMSG */
uint32_t ae_msg_recs_req_leaf(const struct ae_msg_recs_req *q, uint32_t i); /* i < n */

/* A page of records being decoded: the body of a RECS (or DROP) message. Pointers borrow from
 * the message. (The name predates this module; SYNC uses it.) */
struct ae_recs {
    bool more;          /* more records follow: ask again after `after` */
    bool push;          /* pushed by an initiator (not an answer) */
    struct slice after; /* [borrow] key of the last record of the page (the paging cursor) */
    uint32_t count;     /* records in the page */
    uint32_t done;      /* records returned by ae_recs_next so far */
    const uint8_t *p;   /* [borrow] undecoded bytes */
    size_t left;        /* bytes at p */
};

/* The body of a RECS message. Returns 0 or -EBADMSG. */
int ae_msg_get_recs(const struct ae_msg *m, struct ae_recs *r);
/* The body of a DROP message (more, push and after stay empty). Returns 0 or -EBADMSG. */
int ae_msg_get_drop(const struct ae_msg *m, struct ae_recs *r);
/* Opens a whole RECS message of session sid (header and body). Returns 0 or -EBADMSG. */
int ae_recs_open(struct ae_recs *r, uint64_t sid, const uint8_t *msg, size_t len);
/* Decodes the next record into rec ([borrow] from the message). Returns 1, 0 at the end of a
 * well-formed page, or -EBADMSG (a bad record, or bytes after the last one). */
int ae_recs_next(struct ae_recs *r, struct store_rec *rec);

#endif
