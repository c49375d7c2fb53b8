/* SPDX-License-Identifier: MIT */
/*
 * ae: Merkle anti-entropy sessions through the broker; see include/arborkv/ae.h and
 * docs/anti-entropy.md (message layouts).
 *
 * The initiator keeps all the session state; the peer answers each request from its tree or its
 * store and forgets it. One request is outstanding per session at a time (stop and wait), which
 * bounds memory and makes a timeout unambiguous.
 */
#include "arborkv/ae.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "arborkv/ae_msg.h"
#include "arborkv/hlc.h"
#include "arborkv/kv_apply.h"
#include "arborkv/log.h"
#include "arborkv/loop.h"
#include "arborkv/mem.h"
#include "arborkv/merkle.h"
#include "arborkv/purge.h"
#include "arborkv/repl.h"
#include "arborkv/store.h"

#define AE_MAX_PEERS 64 /* sessions started per round at most */
/* After the link (re)connects: the outbox drains first, then a round with every peer. */
#define AE_LINK_UP_DELAY_US 1000000ULL
/* A catch-up round with a failed session is tried again (after AE_LINK_UP_DELAY_US) this many
 * times: right after a broker restart peers are still reconnecting and miss requests. */
#define AE_CATCHUP_TRIES 20

_Static_assert(AE_MSG_DIGEST_LEN == MERKLE_DIGEST_LEN, "NODES messages carry tree digests");

struct session {
    struct session *next; /* a->sessions list */
    struct ae *ae;        /* owner */
    char *peer;           /* peer's node id; heap */
    uint64_t sid;         /* random session id */
    struct ae_walk w;     /* descent, then the differing leaves */
    uint64_t timer;       /* step timeout */
    uint64_t started_us;  /* loop_now_us() at start */
    uint64_t applied;     /* records that won LWW here */
    bool catchup;         /* part of the round that follows a connect */
};

struct ae {
    struct ae_env env; /* [borrow] handles */
    struct repl *repl;
    struct ae_opts o;
    uint64_t round_timer;
    uint64_t link_up_timer; /* the round that follows a connect */
    int catchup_tries;      /* catch-up rounds left; 0: none wanted */
    bool catchup_failed;    /* a session of the current catch-up round failed */
    struct session *sessions;
    struct buf out;   /* message being built */
    struct buf page;  /* records of a page */
    struct buf held;  /* messages waiting for the open transaction's commit */
    struct buf drops; /* records refused as purged (DROP body being built) */
    struct {
        uint64_t started, completed, failed, records_sent, records_received, records_applied,
                bytes_sent, bytes_received, digests_received, malformed, records_refused,
                records_dropped;
        uint64_t last_repair_unix, last_session_ms;
    } stats;
};

/* ---- sending ------------------------------------------------------------------------------- */

/* Publishes a->out to the peer's ae topic. Returns 0, -ENOTCONN, or -EIO (refused). */
static int send_to(struct ae *a, const char *peer)
{
    char suffix[300];
    int n = snprintf(suffix, sizeof(suffix), "ae/%s", peer);
    if (store_in_txn(a->env.store)) {
        /* What this message says (digests, records) may include writes of the open transaction:
         * it leaves only once they are committed (ae_after_commit), never if they roll back. */
        uint32_t lens[2] = { (uint32_t) n, (uint32_t) a->out.len };
        buf_append(&a->held, lens, sizeof(lens));
        buf_append(&a->held, suffix, (size_t) n);
        buf_append(&a->held, a->out.data, a->out.len);
        return 0;
    }
    int rc = repl_publish(a->repl, suffix, a->out.data, a->out.len);
    if (rc == 0) a->stats.bytes_sent += a->out.len;
    return rc;
}

void ae_after_commit(struct ae *a, bool committed)
{
    if (!a || a->held.len == 0) return;
    for (size_t pos = 0; committed && pos < a->held.len;) {
        uint32_t lens[2];
        memcpy(lens, a->held.data + pos, sizeof(lens));
        pos += sizeof(lens);
        char suffix[300];
        memcpy(suffix, a->held.data + pos, lens[0]);
        suffix[lens[0]] = '\0';
        pos += lens[0];
        if (repl_publish(a->repl, suffix, a->held.data + pos, lens[1]) == 0)
            a->stats.bytes_sent += lens[1];
        pos += lens[1];
    }
    /* Rolled back: the messages described state that no longer exists. Sessions waiting for
     * them time out and start over. */
    buf_reset(&a->held);
}

/* ---- pages of leaf records ------------------------------------------------------------------ */

struct leaf_filter {
    struct merkle *m;    /* this node's tree (bucket of a key) */
    const uint8_t *want; /* bitmap of the wanted leaf buckets; NULL: every record */
    store_scan_fn *fn;   /* the caller's callback */
    void *arg;           /* its argument */
};

static int filter_leaves(void *arg, const struct store_rec *rec)
{
    struct leaf_filter *f = arg;
    if (f->want) {
        uint32_t leaf = merkle_bucket_of(f->m, merkle_key_hash(rec->key, rec->key_len));
        if (!(f->want[leaf / 8] & (1u << (leaf % 8)))) return 0;
    }
    return f->fn(f->arg, rec);
}

/*
 * The records of a set of buckets are found by one scan of the table in key order, filtered by
 * bucket: no index to maintain on every insert, at the price of reading the table once per page
 * (docs/anti-entropy.md).
 */
int ae_scan_leaves(struct ae *a, const uint32_t *leaves, uint32_t n, const uint8_t *after,
                   size_t after_len, bool has_after, unsigned flags, store_scan_fn *fn, void *arg)
{
    struct merkle *m = a->env.tree;
    uint8_t *want = NULL;
    if (n) {
        want = xcalloc((merkle_leaves(m) + 7) / 8, 1);
        for (uint32_t i = 0; i < n; i++)
            want[leaves[i] / 8] |= (uint8_t) (1u << (leaves[i] % 8));
    }
    struct leaf_filter f = { .m = m, .want = want, .fn = fn, .arg = arg };
    struct buf cursor; /* copy of `after`: it may point into memory the store reuses */
    buf_init(&cursor);
    if (has_after) buf_append(&cursor, after, after_len);
    int rc = store_scan(a->env.store, NULL, 0, has_after ? cursor.data : NULL, cursor.len, flags,
                        filter_leaves, &f);
    buf_clear(&cursor);
    free(want);
    return rc;
}

struct page_fill {
    struct ae *a;
    uint32_t n;      /* records in the page */
    struct buf last; /* key of the last record added (the cursor) */
};

static int add_to_page(void *arg, const struct store_rec *rec)
{
    struct page_fill *f = arg;
    if (f->n > 0 && f->a->page.len >= AE_PAGE_BYTES) return 1; /* full: stop before this one */
    ae_msg_put_rec(&f->a->page, rec);
    f->n++;
    buf_reset(&f->last);
    buf_append(&f->last, rec->key, rec->key_len);
    return 0;
}

/* Where a page stopped: the next one starts after key `last` (when more). */
struct page_end {
    bool more;
    struct buf last; /* owned by the caller */
    uint32_t nrecs;
};

/*
 * Builds in out a RECS message from `from` with the records (tombstones included) of the leaf
 * buckets leaves[0..n) (n == 0: every record), in key order, starting after key `after` when
 * has_after, about AE_PAGE_BYTES at most (one record more at worst). Returns 0 or -EIO.
 */
static int build_page(struct ae *a, struct buf *out, uint64_t sid, const char *from,
                      const uint32_t *leaves, uint32_t n, const uint8_t *after, size_t after_len,
                      bool has_after, bool push, struct page_end *e)
{
    struct page_fill f = { .a = a };
    buf_init(&f.last);
    buf_reset(&a->page);
    int rc = ae_scan_leaves(a, leaves, n, after, after_len, has_after, 0, add_to_page, &f);
    e->more = rc == 1;
    buf_reset(&e->last);
    if (e->more) buf_append(&e->last, f.last.data, f.last.len);
    e->nrecs = f.n;
    if (rc >= 0) {
        unsigned flags = (e->more ? AE_MSG_F_MORE : 0) | (push ? AE_MSG_F_PUSH : 0);
        ae_msg_put_recs(out, sid, from, flags, e->last.data, e->last.len, f.n, a->page.data,
                        a->page.len);
    }
    buf_clear(&f.last);
    return rc < 0 ? rc : 0;
}

/* ---- the descent (initiator), shared with SYNC ---------------------------------------------- */

void ae_walk_init(struct ae_walk *w)
{
    memset(w, 0, sizeof(*w));
    w->cur = xmalloc(sizeof(*w->cur));
    w->cur[0] = 0;
    w->ncur = w->cap_cur = 1;
}

void ae_walk_clear(struct ae_walk *w)
{
    free(w->cur);
    free(w->next);
    memset(w, 0, sizeof(*w));
}

void ae_walk_nodes_req(struct ae_walk *w, uint64_t sid, const char *from, struct buf *out)
{
    w->chunk_n = w->ncur - w->chunk;
    if (w->chunk_n > AE_MAX_NODES_REQ) w->chunk_n = AE_MAX_NODES_REQ;
    ae_msg_put_nodes_req(out, sid, from, w->level, w->cur + w->chunk, w->chunk_n);
}

/* All children of this level's nodes compared: moves down a level. */
static int walk_descend(struct ae_walk *w, unsigned depth)
{
    uint32_t *t = w->cur;
    size_t tcap = w->cap_cur;
    w->cur = w->next;
    w->cap_cur = w->cap_next;
    w->ncur = w->nnext;
    w->next = t;
    w->cap_next = tcap;
    w->nnext = 0;
    w->level++;
    w->chunk = w->chunk_n = 0;
    if (w->ncur == 0) return AE_WALK_EQUAL;
    if (w->level < depth) return AE_WALK_NODES;
    w->at_leaves = true;
    return AE_WALK_LEAVES;
}

/* A NODES answer whose header was read; see ae_walk_on_nodes. */
static int walk_nodes(struct ae *a, struct ae_walk *w, const struct ae_msg *msg)
{
    struct merkle *m = a->env.tree;
    unsigned f = merkle_fanout(m), d = merkle_depth(m);
    struct ae_msg_nodes ans;
    if (ae_msg_get_nodes(msg, &ans) < 0) return -EBADMSG;
    w->peer_fanout = ans.fanout;
    w->peer_depth = ans.depth;
    unsigned level = ans.level;
    uint32_t n = ans.n;
    if (w->peer_fanout != f || w->peer_depth != d) return -EPROTO;
    if (w->at_leaves || level != w->level || n != w->chunk_n) return -EBADMSG;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *digests;
        uint32_t idx = ae_msg_nodes_entry(&ans, i, &digests);
        if (idx != w->cur[w->chunk + i]) return -EBADMSG;
        w->digests += f;
        for (unsigned k = 0; k < f; k++) {
            uint32_t child = idx * f + k;
            uint8_t mine[MERKLE_DIGEST_LEN];
            if (merkle_node(m, level + 1, child, mine) < 0) return -EBADMSG;
            if (!memcmp(mine, digests + (size_t) k * MERKLE_DIGEST_LEN, MERKLE_DIGEST_LEN))
                continue;
            if (w->nnext == w->cap_next) {
                w->cap_next = w->cap_next ? w->cap_next * 2 : 64;
                w->next = xrealloc(w->next, w->cap_next * sizeof(*w->next));
            }
            w->next[w->nnext++] = child;
        }
    }
    w->chunk += w->chunk_n;
    w->chunk_n = 0;
    if (w->chunk < w->ncur) return AE_WALK_NODES;
    return walk_descend(w, d);
}

int ae_walk_on_nodes(struct ae *a, struct ae_walk *w, uint64_t sid, const uint8_t *msg, size_t len)
{
    struct ae_msg m;
    if (ae_msg_open(&m, msg, len) < 0 || m.type != AE_MSG_NODES || m.sid != sid) return -EBADMSG;
    return walk_nodes(a, w, &m);
}

bool ae_walk_next_leaves(struct ae_walk *w)
{
    w->chunk += w->chunk_n;
    w->chunk_n = w->ncur - w->chunk;
    if (w->chunk_n > AE_MAX_LEAVES_REQ) w->chunk_n = AE_MAX_LEAVES_REQ;
    return w->chunk_n > 0;
}

/* ---- sessions (initiator) ------------------------------------------------------------------ */

static const char *send_error(int rc)
{
    return rc == -ENOTCONN ? "broker not connected" : "publish refused (see the mqtt warnings)";
}

static void session_step_timeout(struct loop *l, void *arg);
static void catchup_session_ended(struct ae *a);

static void session_end(struct session *s, bool ok, const char *why)
{
    struct ae *a = s->ae;
    uint64_t ms = (loop_now_us() - s->started_us) / 1000;
    if (ok) {
        a->stats.completed++;
        a->stats.last_repair_unix = hlc_wall_ns() / 1000000000ULL;
        a->stats.last_session_ms = ms;
        if (s->applied)
            log_info("ae: session with %s repaired %llu records in %llu ms", s->peer,
                     (unsigned long long) s->applied, (unsigned long long) ms);
    } else {
        a->stats.failed++;
        log_info("ae: session with %s failed after %llu ms: %s", s->peer, (unsigned long long) ms,
                 why);
    }
    a->stats.digests_received += s->w.digests;
    if (s->catchup && !ok) a->catchup_failed = true;
    bool catchup = s->catchup;
    if (s->timer) loop_cancel_timer(a->env.loop, s->timer);
    for (struct session **pp = &a->sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    free(s->peer);
    ae_walk_clear(&s->w);
    free(s);
    if (catchup) catchup_session_ended(a);
}

static void arm(struct session *s)
{
    struct ae *a = s->ae;
    if (s->timer) loop_cancel_timer(a->env.loop, s->timer);
    s->timer = loop_add_timer(a->env.loop, (uint64_t) a->o.step_timeout_s * 1000000ULL,
                              session_step_timeout, s);
}

static void session_step_timeout(struct loop *l, void *arg)
{
    struct session *s = arg;
    (void) l;
    s->timer = 0;
    session_end(s, false, "no answer in time");
}

static void send_nodes_req(struct session *s)
{
    struct ae *a = s->ae;
    ae_walk_nodes_req(&s->w, s->sid, a->env.node_id, &a->out);
    int rc = send_to(a, s->peer);
    if (rc < 0) {
        session_end(s, false, send_error(rc));
        return;
    }
    arm(s);
}

/* Asks for the peer's records of the current chunk of differing leaves. */
static void send_pull(struct session *s, const uint8_t *after, size_t after_len, bool has_after)
{
    struct ae *a = s->ae;
    ae_recs_req(s->sid, a->env.node_id, s->w.cur + s->w.chunk, (uint32_t) s->w.chunk_n, after,
                after_len, has_after, &a->out);
    int rc = send_to(a, s->peer);
    if (rc < 0) {
        session_end(s, false, send_error(rc));
        return;
    }
    arm(s);
}

/* Moves to the next chunk of differing leaves: pushes our records of it, then asks for the
 * peer's. Ends the session when every chunk is done. */
static void start_chunk(struct session *s)
{
    struct ae *a = s->ae;
    if (!ae_walk_next_leaves(&s->w)) {
        session_end(s, true, NULL);
        return;
    }
    /* Our side first: the peer applies these before it answers the request that follows on
     * the same topic, so its answer is already the merged state. */
    struct page_end e = { 0 };
    buf_init(&e.last);
    struct buf after;
    buf_init(&after);
    bool has_after = false;
    const char *fail = NULL;
    for (;;) {
        if (build_page(a, &a->out, s->sid, a->env.node_id, s->w.cur + s->w.chunk,
                       (uint32_t) s->w.chunk_n, after.data, after.len, has_after, true, &e) < 0) {
            fail = "storage error";
            break;
        }
        int rc = e.nrecs ? send_to(a, s->peer) : 0;
        if (rc < 0) {
            fail = send_error(rc);
            break;
        }
        a->stats.records_sent += e.nrecs;
        if (!e.more) break;
        has_after = true;
        buf_reset(&after);
        buf_append(&after, e.last.data, e.last.len);
    }
    buf_clear(&after);
    buf_clear(&e.last);
    if (fail)
        session_end(s, false, fail);
    else
        send_pull(s, NULL, 0, false);
}

static void on_nodes(struct session *s, const struct ae_msg *m)
{
    struct ae *a = s->ae;
    int rc = walk_nodes(a, &s->w, m);
    switch (rc) {
    case AE_WALK_NODES:
        send_nodes_req(s);
        return;
    case AE_WALK_LEAVES:
        start_chunk(s);
        return;
    case AE_WALK_EQUAL:
        session_end(s, true, NULL);
        return;
    case -EPROTO:
        log_warn("ae: %s has a %ux%u tree, this node %ux%u: set the same anti_entropy fanout and "
                 "depth on every node",
                 s->peer, s->w.peer_fanout, s->w.peer_depth, merkle_fanout(a->env.tree),
                 merkle_depth(a->env.tree));
        session_end(s, false, "tree shapes differ");
        return;
    default:
        a->stats.malformed++;
        session_end(s, false, "malformed digests answer");
        return;
    }
}

/*
 * Applies the records of a RECS page sent by peer `from`. Records refused as purged (kv_apply.h: a
 * tombstone newer than them may have been purged here) go back to `from` in a DROP message, so
 * the peer drops them too and the trees converge without resurrecting anything
 * (docs/anti-entropy.md, "Tombstone purge"). Returns records applied or -1.
 */
static int64_t apply_records(struct ae *a, struct ae_recs *r, const char *from)
{
    int64_t applied = 0;
    uint32_t refused = 0;
    struct store_rec rec;
    int rc;
    buf_reset(&a->drops);
    while ((rc = ae_recs_next(r, &rec)) == 1) {
        rc = kv_apply_remote(a->env.hlc, a->env.store, &rec);
        if (rc < 0) return -1; /* the turn has failed (store.h) */
        a->stats.records_received++;
        if (rc == KV_APPLIED) applied++;
        if (rc == KV_PURGED) {
            ae_msg_put_rec(&a->drops, &rec);
            refused++;
        }
    }
    if (rc < 0) {
        a->stats.malformed++;
        return -1;
    }
    a->stats.records_applied += (uint64_t) applied;
    a->stats.records_refused += refused;
    if (refused) {
        ae_msg_put_drop(&a->out, a->env.node_id, refused, a->drops.data, a->drops.len);
        (void) send_to(a, from); /* lost: the next session refuses them again */
    }
    return applied;
}

/*
 * DROP: records of this node that the peer refused as purged. Each is dropped (store_drop: no
 * tombstone, only if still exactly that version) when it is also past this node's tombstone TTL,
 * so a peer can never make a young record vanish.
 */
static void on_drop(struct ae *a, const struct ae_msg *m)
{
    struct ae_recs recs;
    if (ae_msg_get_drop(m, &recs) < 0) {
        a->stats.malformed++;
        return;
    }
    uint64_t cutoff = purge_cutoff_ns(a->env.purge);
    struct store_rec r;
    int got;
    while ((got = ae_recs_next(&recs, &r)) == 1) {
        if (r.ts >= cutoff) continue;
        int rc = store_begin(a->env.store);
        if (rc == 0) rc = store_drop(a->env.store, &r);
        if (rc < 0) return; /* the turn has failed (store.h) */
        a->stats.records_dropped += (uint64_t) rc;
    }
    if (got < 0) a->stats.malformed++;
}

static void on_recs_answer(struct session *s, struct ae_recs *r)
{
    if (!s->w.at_leaves || r->push) {
        s->ae->stats.malformed++;
        session_end(s, false, "malformed records answer");
        return;
    }
    struct buf cursor; /* r->after borrows from the message */
    buf_init(&cursor);
    buf_append(&cursor, r->after.p, r->after.len);
    bool more = r->more;
    int64_t applied = apply_records(s->ae, r, s->peer);
    if (applied < 0) {
        buf_clear(&cursor);
        session_end(s, false, "bad records answer or storage error");
        return;
    }
    s->applied += (uint64_t) applied;
    if (more)
        send_pull(s, cursor.data, cursor.len, true);
    else
        start_chunk(s);
    buf_clear(&cursor);
}

static void start_session(struct ae *a, const char *peer, bool catchup)
{
    struct session *s = xcalloc(1, sizeof(*s));
    s->ae = a;
    s->peer = xstrdup(peer);
    randombytes_buf(&s->sid, sizeof(s->sid));
    s->started_us = loop_now_us();
    ae_walk_init(&s->w);
    s->next = a->sessions;
    a->sessions = s;
    s->catchup = catchup;
    a->stats.started++;
    send_nodes_req(s);
}

/* ---- the peer's side (stateless) ----------------------------------------------------------- */

static int answer_nodes(struct ae *a, const struct ae_msg *msg, struct buf *out)
{
    struct merkle *m = a->env.tree;
    unsigned f = merkle_fanout(m), d = merkle_depth(m);
    struct ae_msg_nodes_req q;
    if (ae_msg_get_nodes_req(msg, &q) < 0 || q.level >= d) return -EBADMSG;
    unsigned level = q.level;
    uint32_t n = q.n;
    uint64_t width = 1;
    for (unsigned l = 0; l < level; l++)
        width *= f;
    ae_msg_put_nodes(out, msg->sid, a->env.node_id, f, d, level, n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = ae_msg_nodes_req_index(&q, i);
        if (idx >= width) return -EBADMSG;
        uint8_t *dg = ae_msg_put_nodes_entry(out, idx, f);
        for (unsigned k = 0; k < f; k++)
            if (merkle_node(m, level + 1, idx * f + k, dg + (size_t) k * MERKLE_DIGEST_LEN) < 0)
                return -EBADMSG;
    }
    return 0;
}

/* Returns the number of records in the page (>= 0), -EBADMSG or -EIO. */
static int64_t answer_recs(struct ae *a, const struct ae_msg *m, struct buf *out)
{
    struct ae_msg_recs_req q;
    /* n == 0: every record (SYNC --full); ae sessions always name their buckets. */
    if (ae_msg_get_recs_req(m, &q) < 0) return -EBADMSG;
    uint32_t n = q.n;
    uint32_t *leaves = xmalloc(((size_t) n + 1) * sizeof(*leaves));
    int64_t rc = -EBADMSG;
    for (uint32_t i = 0; i < n; i++) {
        leaves[i] = ae_msg_recs_req_leaf(&q, i);
        if (leaves[i] >= merkle_leaves(a->env.tree)) goto out;
    }
    struct page_end e = { 0 };
    buf_init(&e.last);
    rc = build_page(a, out, m->sid, a->env.node_id, leaves, n, q.after.p, q.after.len, q.has_after,
                    false, &e);
    buf_clear(&e.last);
    if (rc == 0) rc = (int64_t) e.nrecs;
out:
    free(leaves);
    return rc;
}

int ae_answer(struct ae *a, const uint8_t *req, size_t len, struct buf *reply)
{
    struct ae_msg m;
    int64_t rc = -EBADMSG;
    struct buf *out = &a->out;
    if (len <= AE_MAX_MESSAGE && ae_msg_open(&m, req, len) == 0) {
        if (m.type == AE_MSG_NODES_REQ)
            rc = answer_nodes(a, &m, out);
        else if (m.type == AE_MSG_RECS_REQ)
            rc = answer_recs(a, &m, out);
    }
    if (rc == -EBADMSG) a->stats.malformed++;
    if (rc < 0) return (int) rc;
    buf_append(reply, out->data, out->len);
    return 0;
}

/* A message on this node's ae topic (repl_listen). */
static void ae_on_message(void *arg, const uint8_t *payload, size_t len)
{
    struct ae *a = arg;
    struct ae_msg m;
    a->stats.bytes_received += len;
    if (len > AE_MAX_MESSAGE || ae_msg_open(&m, payload, len) < 0) {
        a->stats.malformed++;
        return;
    }
    struct ae_recs r;
    switch (m.type) {
    case AE_MSG_NODES_REQ:
        if (answer_nodes(a, &m, &a->out) < 0)
            a->stats.malformed++;
        else
            (void) send_to(a, m.from);
        return;
    case AE_MSG_RECS_REQ: {
        int64_t n = answer_recs(a, &m, &a->out);
        if (n == -EBADMSG) a->stats.malformed++;
        if (n < 0) return;
        a->stats.records_sent += (uint64_t) n;
        (void) send_to(a, m.from);
        return;
    }
    case AE_MSG_DROP:
        on_drop(a, &m);
        return;
    case AE_MSG_NODES:
        break;
    case AE_MSG_RECS:
        if (ae_msg_get_recs(&m, &r) < 0) {
            a->stats.malformed++;
            return;
        }
        if (r.push) { /* records pushed by an initiator: apply, no answer */
            (void) apply_records(a, &r, m.from);
            return;
        }
        break;
    default: /* ae_msg_open accepts known types only */
        a->stats.malformed++;
        return;
    }
    struct session *s = a->sessions;
    while (s && (s->sid != m.sid || strcmp(s->peer, m.from) != 0))
        s = s->next;
    if (!s) return; /* a late answer of a session that ended */
    if (m.type == AE_MSG_NODES)
        on_nodes(s, &m);
    else
        on_recs_answer(s, &r);
}

/* ---- rounds -------------------------------------------------------------------------------- */

/* Starts a session with each online peer that has none running; with every_peer false only with
 * those whose id sorts after this node's (the smaller id initiates, so a pair has one session). */
static void run_round(struct ae *a, bool every_peer, bool catchup)
{
    const char *peers[AE_MAX_PEERS];
    size_t n = repl_online_peers(a->repl, peers, AE_MAX_PEERS);
    for (size_t i = 0; i < n; i++) {
        if (!every_peer && strcmp(peers[i], a->env.node_id) <= 0) continue;
        bool busy = false;
        for (struct session *s = a->sessions; s && !busy; s = s->next)
            busy = !strcmp(s->peer, peers[i]);
        if (!busy) start_session(a, peers[i], catchup);
    }
}

void ae_run_now(struct ae *a)
{
    run_round(a, false, false);
}

static void link_up_tick(struct loop *l, void *arg)
{
    struct ae *a = arg;
    (void) l;
    a->link_up_timer = 0;
    if (!repl_is_enabled(a->repl) || a->catchup_tries <= 0) return;
    a->catchup_tries--;
    a->catchup_failed = false;
    run_round(a, true, true);
    for (struct session *s = a->sessions; s; s = s->next)
        if (s->catchup) return; /* catchup_session_ended decides when they are done */
    catchup_session_ended(a);
}

/* After a catch-up session ended: once none is left, the catch-up is over if all succeeded
 * (or no peer was online), else it is tried again while tries remain. */
static void catchup_session_ended(struct ae *a)
{
    for (struct session *s = a->sessions; s; s = s->next)
        if (s->catchup) return;
    if (a->link_up_timer) return;
    if (a->catchup_failed && a->catchup_tries > 0)
        a->link_up_timer = loop_add_timer(a->env.loop, AE_LINK_UP_DELAY_US, link_up_tick, a);
    else
        a->catchup_tries = 0;
}

/* The link has just connected: a catch-up round follows (ae_new). */
static void ae_link_up(void *arg)
{
    struct ae *a = arg;
    if (!a->o.enabled) return;
    a->catchup_tries = AE_CATCHUP_TRIES;
    if (!a->link_up_timer)
        a->link_up_timer = loop_add_timer(a->env.loop, AE_LINK_UP_DELAY_US, link_up_tick, a);
}

static void round_tick(struct loop *l, void *arg)
{
    struct ae *a = arg;
    if (repl_is_enabled(a->repl)) ae_run_now(a);
    a->round_timer = loop_add_timer(l, (uint64_t) a->o.interval_s * 1000000ULL, round_tick, a);
}

int ae_new(struct ae **out, const struct ae_env *env, struct repl *r, const struct ae_opts *o)
{
    assert(env && env->loop && env->store && env->tree && env->hlc && env->node_id && r && o);
    struct ae *a = xcalloc(1, sizeof(*a));
    a->env = *env;
    a->repl = r;
    a->o = *o;
    if (a->o.interval_s < 1) a->o.interval_s = 1;
    if (a->o.step_timeout_s < 1) a->o.step_timeout_s = 1;
    buf_init(&a->out);
    buf_init(&a->page);
    buf_init(&a->held);
    buf_init(&a->drops);
    if (o->enabled)
        a->round_timer =
                loop_add_timer(env->loop, (uint64_t) a->o.interval_s * 1000000ULL, round_tick, a);
    int rc = repl_listen(r, &(struct repl_listener){ .suffix = "ae",
                                                     .on_message = ae_on_message,
                                                     .on_link_up = ae_link_up,
                                                     .arg = a });
    if (rc < 0) {
        ae_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void ae_free(struct ae *a)
{
    if (!a) return;
    while (a->sessions) {
        struct session *s = a->sessions;
        a->sessions = s->next;
        if (s->timer) loop_cancel_timer(a->env.loop, s->timer);
        free(s->peer);
        ae_walk_clear(&s->w);
        free(s);
    }
    if (a->round_timer) loop_cancel_timer(a->env.loop, a->round_timer);
    if (a->link_up_timer) loop_cancel_timer(a->env.loop, a->link_up_timer);
    buf_clear(&a->out);
    buf_clear(&a->page);
    buf_clear(&a->held);
    buf_clear(&a->drops);
    free(a);
}

void ae_info(const struct ae *a, struct buf *b)
{
    static const struct ae empty;
    if (!a) a = &empty;
    size_t running = 0;
    for (const struct session *s = a->sessions; s; s = s->next)
        running++;
    buf_add_field(b, "ae_enabled", a->o.enabled);
    buf_add_field(b, "ae_sessions_started", a->stats.started);
    buf_add_field(b, "ae_sessions_completed", a->stats.completed);
    buf_add_field(b, "ae_sessions_failed", a->stats.failed);
    buf_add_field(b, "ae_sessions_running", running);
    buf_add_field(b, "ae_records_sent", a->stats.records_sent);
    buf_add_field(b, "ae_records_received", a->stats.records_received);
    buf_add_field(b, "ae_records_applied", a->stats.records_applied);
    buf_add_field(b, "ae_bytes_sent", a->stats.bytes_sent);
    buf_add_field(b, "ae_bytes_received", a->stats.bytes_received);
    buf_add_field(b, "ae_digests_received", a->stats.digests_received);
    buf_add_field(b, "ae_malformed", a->stats.malformed);
    buf_add_field(b, "ae_records_refused", a->stats.records_refused);
    buf_add_field(b, "ae_records_dropped", a->stats.records_dropped);
    buf_add_field(b, "ae_last_repair_unix", a->stats.last_repair_unix);
    buf_add_field(b, "ae_last_session_ms", a->stats.last_session_ms);
}
