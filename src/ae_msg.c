/* SPDX-License-Identifier: MIT */
/*
 * ae_msg: anti-entropy messages; see include/arborkv/ae_msg.h (the format and its rules).
 *
 * Encoders append with buf_append, which cannot fail (mem.h aborts on exhaustion). Decoders read
 * through a cursor that turns sticky-bad on the first read past the end, so a body is read field
 * by field and checked once; a count is compared with the bytes left before anything is read in
 * proportion to it, so a claimed count never costs more than the message itself.
 */
#include "arborkv/ae_msg.h"

#include <errno.h>
#include <string.h>

#define AE_MAGIC0 'A'
#define AE_MAGIC1 'E'

/* ---- encoding ------------------------------------------------------------------------------ */

static void put_u8(struct buf *b, uint8_t v)
{
    buf_append(b, &v, 1);
}

static void put_u16(struct buf *b, uint16_t v)
{
    uint8_t p[2] = { (uint8_t) v, (uint8_t) (v >> 8) };
    buf_append(b, p, 2);
}

static void put_u32(struct buf *b, uint32_t v)
{
    uint8_t p[4];
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
    buf_append(b, p, 4);
}

static void put_u64(struct buf *b, uint64_t v)
{
    uint8_t p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
    buf_append(b, p, 8);
}

/* Resets out and writes a message header. from: 1..255 bytes (node ids are checked by conf). */
static void put_header(struct buf *out, enum ae_msg_type t, uint64_t sid, const char *from)
{
    size_t n = strlen(from);
    if (n > AE_MSG_FROM_MAX) n = AE_MSG_FROM_MAX;
    buf_reset(out);
    put_u8(out, AE_MAGIC0);
    put_u8(out, AE_MAGIC1);
    put_u8(out, AE_MSG_VERSION);
    put_u8(out, (uint8_t) t);
    put_u64(out, sid);
    put_u8(out, (uint8_t) n);
    buf_append(out, from, n);
}

void ae_msg_put_nodes_req(struct buf *out, uint64_t sid, const char *from, unsigned level,
                          const uint32_t *idx, size_t n)
{
    put_header(out, AE_MSG_NODES_REQ, sid, from);
    put_u8(out, (uint8_t) level);
    put_u32(out, (uint32_t) n);
    for (size_t i = 0; i < n; i++)
        put_u32(out, idx[i]);
}

void ae_msg_put_nodes(struct buf *out, uint64_t sid, const char *from, unsigned fanout,
                      unsigned depth, unsigned level, uint32_t n)
{
    put_header(out, AE_MSG_NODES, sid, from);
    put_u16(out, (uint16_t) fanout);
    put_u8(out, (uint8_t) depth);
    put_u8(out, (uint8_t) level);
    put_u32(out, n);
}

uint8_t *ae_msg_put_nodes_entry(struct buf *out, uint32_t index, unsigned fanout)
{
    static const uint8_t zero[AE_MSG_DIGEST_LEN];
    put_u32(out, index);
    for (unsigned k = 0; k < fanout; k++)
        buf_append(out, zero, sizeof(zero));
    return out->data + out->len - (size_t) fanout * AE_MSG_DIGEST_LEN;
}

void ae_recs_req(uint64_t sid, const char *from, const uint32_t *leaves, uint32_t n,
                 const uint8_t *after, size_t after_len, bool has_after, struct buf *out)
{
    put_header(out, AE_MSG_RECS_REQ, sid, from);
    put_u32(out, n);
    for (uint32_t i = 0; i < n; i++)
        put_u32(out, leaves[i]);
    put_u8(out, has_after ? 1 : 0);
    put_u32(out, (uint32_t) after_len);
    buf_append(out, after, after_len);
}

void ae_msg_put_rec(struct buf *b, const struct store_rec *r)
{
    put_u32(b, (uint32_t) r->key_len);
    buf_append(b, r->key, r->key_len);
    put_u8(b, r->tombstone ? 1 : 0);
    put_u64(b, r->ts);
    buf_append(b, r->op_id, STORE_OP_ID_BYTES);
    put_u32(b, r->tombstone ? 0 : (uint32_t) r->value_len);
    if (!r->tombstone) buf_append(b, r->value, r->value_len);
}

void ae_msg_put_recs(struct buf *out, uint64_t sid, const char *from, unsigned flags,
                     const uint8_t *after, size_t after_len, uint32_t count, const uint8_t *recs,
                     size_t recs_len)
{
    put_header(out, AE_MSG_RECS, sid, from);
    put_u8(out, (uint8_t) flags);
    put_u32(out, (uint32_t) after_len);
    buf_append(out, after, after_len);
    put_u32(out, count);
    buf_append(out, recs, recs_len);
}

void ae_msg_put_drop(struct buf *out, const char *from, uint32_t count, const uint8_t *recs,
                     size_t recs_len)
{
    put_header(out, AE_MSG_DROP, 0, from);
    put_u32(out, count);
    buf_append(out, recs, recs_len);
}

/* ---- decoding ------------------------------------------------------------------------------ */

struct cur {
    const uint8_t *p;
    size_t left;
    bool bad;
};

static bool take(struct cur *c, size_t n, const uint8_t **out)
{
    if (c->bad || c->left < n) {
        c->bad = true;
        return false;
    }
    *out = c->p;
    c->p += n;
    c->left -= n;
    return true;
}

static uint64_t le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t) p[i] << (8 * i);
    return v;
}

static uint64_t get_le(struct cur *c, size_t n)
{
    const uint8_t *p;
    if (!take(c, n, &p)) return 0;
    return le(p, n);
}

static bool get_rec(struct cur *c, struct store_rec *r)
{
    const uint8_t *p;
    memset(r, 0, sizeof(*r));
    size_t klen = (size_t) get_le(c, 4);
    if (!take(c, klen, &r->key)) return false;
    r->key_len = klen;
    uint64_t tomb = get_le(c, 1);
    r->ts = get_le(c, 8);
    if (!take(c, STORE_OP_ID_BYTES, &p)) return false;
    memcpy(r->op_id, p, STORE_OP_ID_BYTES);
    size_t vlen = (size_t) get_le(c, 4);
    if (tomb > 1 || (tomb && vlen)) return c->bad = true, false;
    r->tombstone = tomb == 1;
    if (!take(c, vlen, &r->value)) return false;
    r->value_len = vlen;
    return !c->bad;
}

int ae_msg_open(struct ae_msg *m, const uint8_t *msg, size_t len)
{
    struct cur c = { msg, len, false };
    const uint8_t *magic, *fromp;
    memset(m, 0, sizeof(*m));
    if (!take(&c, 2, &magic) || magic[0] != AE_MAGIC0 || magic[1] != AE_MAGIC1 ||
        get_le(&c, 1) != AE_MSG_VERSION)
        return -EBADMSG;
    unsigned type = (unsigned) get_le(&c, 1);
    m->sid = get_le(&c, 8);
    size_t flen = (size_t) get_le(&c, 1);
    if (!take(&c, flen, &fromp) || flen == 0 || type < AE_MSG_NODES_REQ || type > AE_MSG_DROP)
        return -EBADMSG;
    m->type = (enum ae_msg_type) type;
    memcpy(m->from, fromp, flen);
    m->from[flen] = '\0';
    if (strlen(m->from) != flen || strchr(m->from, '/') || strchr(m->from, '+') ||
        strchr(m->from, '#'))
        return -EBADMSG;
    m->body = c.p;
    m->body_len = c.left;
    return 0;
}

int ae_msg_get_nodes_req(const struct ae_msg *m, struct ae_msg_nodes_req *q)
{
    struct cur c = { m->body, m->body_len, false };
    memset(q, 0, sizeof(*q));
    if (m->type != AE_MSG_NODES_REQ) return -EBADMSG;
    q->level = (unsigned) get_le(&c, 1);
    q->n = (uint32_t) get_le(&c, 4);
    if (c.bad || q->n > AE_MAX_NODES_REQ || c.left != (size_t) q->n * 4) return -EBADMSG;
    q->idx = c.p;
    return 0;
}

uint32_t ae_msg_nodes_req_index(const struct ae_msg_nodes_req *q, uint32_t i)
{
    return (uint32_t) le(q->idx + (size_t) i * 4, 4);
}

int ae_msg_get_nodes(const struct ae_msg *m, struct ae_msg_nodes *a)
{
    struct cur c = { m->body, m->body_len, false };
    memset(a, 0, sizeof(*a));
    if (m->type != AE_MSG_NODES) return -EBADMSG;
    a->fanout = (unsigned) get_le(&c, 2);
    a->depth = (unsigned) get_le(&c, 1);
    a->level = (unsigned) get_le(&c, 1);
    a->n = (uint32_t) get_le(&c, 4);
    size_t entry = 4 + (size_t) a->fanout * AE_MSG_DIGEST_LEN;
    if (c.bad || a->n > AE_MAX_NODES_REQ || c.left != (size_t) a->n * entry) return -EBADMSG;
    a->entries = c.p;
    return 0;
}

uint32_t ae_msg_nodes_entry(const struct ae_msg_nodes *a, uint32_t i, const uint8_t **digests)
{
    const uint8_t *e = a->entries + (size_t) i * (4 + (size_t) a->fanout * AE_MSG_DIGEST_LEN);
    *digests = e + 4;
    return (uint32_t) le(e, 4);
}

int ae_msg_get_recs_req(const struct ae_msg *m, struct ae_msg_recs_req *q)
{
    struct cur c = { m->body, m->body_len, false };
    memset(q, 0, sizeof(*q));
    if (m->type != AE_MSG_RECS_REQ) return -EBADMSG;
    q->n = (uint32_t) get_le(&c, 4);
    if (c.bad || q->n > AE_MAX_LEAVES_REQ || !take(&c, (size_t) q->n * 4, &q->leaves))
        return -EBADMSG;
    uint8_t has_after = (uint8_t) get_le(&c, 1);
    size_t klen = (size_t) get_le(&c, 4);
    const uint8_t *key = NULL;
    if (!take(&c, klen, &key) || c.left || has_after > 1) return -EBADMSG;
    q->has_after = has_after == 1;
    q->after = (struct slice){ key, klen };
    return 0;
}

uint32_t ae_msg_recs_req_leaf(const struct ae_msg_recs_req *q, uint32_t i)
{
    return (uint32_t) le(q->leaves + (size_t) i * 4, 4);
}

/* count records of at least AE_MSG_RECORD_MIN bytes each must fit in the bytes left. */
static bool count_fits(uint32_t count, size_t left)
{
    return count <= left / AE_MSG_RECORD_MIN;
}

int ae_msg_get_recs(const struct ae_msg *m, struct ae_recs *r)
{
    struct cur c = { m->body, m->body_len, false };
    memset(r, 0, sizeof(*r));
    if (m->type != AE_MSG_RECS) return -EBADMSG;
    uint8_t flags = (uint8_t) get_le(&c, 1);
    size_t klen = (size_t) get_le(&c, 4);
    const uint8_t *key = NULL;
    if (!take(&c, klen, &key)) return -EBADMSG;
    r->count = (uint32_t) get_le(&c, 4);
    if (c.bad || (flags & ~(AE_MSG_F_MORE | AE_MSG_F_PUSH)) || !count_fits(r->count, c.left))
        return -EBADMSG;
    r->more = flags & AE_MSG_F_MORE;
    r->push = flags & AE_MSG_F_PUSH;
    r->after = (struct slice){ key, klen };
    r->p = c.p;
    r->left = c.left;
    return 0;
}

int ae_msg_get_drop(const struct ae_msg *m, struct ae_recs *r)
{
    struct cur c = { m->body, m->body_len, false };
    memset(r, 0, sizeof(*r));
    if (m->type != AE_MSG_DROP) return -EBADMSG;
    r->count = (uint32_t) get_le(&c, 4);
    if (c.bad || !count_fits(r->count, c.left)) return -EBADMSG;
    r->p = c.p;
    r->left = c.left;
    return 0;
}

int ae_recs_open(struct ae_recs *r, uint64_t sid, const uint8_t *msg, size_t len)
{
    struct ae_msg m;
    memset(r, 0, sizeof(*r));
    if (ae_msg_open(&m, msg, len) < 0 || m.type != AE_MSG_RECS || m.sid != sid) return -EBADMSG;
    return ae_msg_get_recs(&m, r);
}

int ae_recs_next(struct ae_recs *r, struct store_rec *rec)
{
    if (r->done == r->count) return r->left ? -EBADMSG : 0;
    struct cur c = { r->p, r->left, false };
    if (!get_rec(&c, rec)) return -EBADMSG;
    r->p = c.p;
    r->left = c.left;
    r->done++;
    return 1;
}
