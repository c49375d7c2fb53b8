/* SPDX-License-Identifier: MIT */
/*
 * mirror: SYNC host port [--full] [--verify]; see include/arborkv/mirror.h and
 * docs/anti-entropy.md ("SYNC").
 *
 * A run is a state machine driven by loop events. Every handler ends with settle(), which
 * reports the end (mirror_done_fn) and frees the run once a step has marked it finished (P_DONE):
 * nothing below a handler frees the run, so no code touches it after it is gone.
 *
 * Making a key range equal: the remote's records of a page (arborkv: the records of some leaf
 * buckets, or of all, in key order after a cursor; fallback: every key) are applied one by one,
 * then the local live keys of the same range that the page did not mention are deleted, in
 * batches of MIRROR_DELETE_BATCH per loop turn (the sweep). The range of a page is (previous
 * cursor, page's last key], or to the end for the last page; both stores order keys as SQLite
 * orders blobs, so the ranges agree.
 */
#include "arborkv/mirror.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "arborkv/ae.h"
#include "arborkv/hlc.h"
#include "arborkv/kv.h"
#include "arborkv/kv_apply.h"
#include "arborkv/log.h"
#include "arborkv/loop.h"
#include "arborkv/lww.h"
#include "arborkv/mem.h"
#include "arborkv/merkle.h"
#include "arborkv/resp.h"
#include "arborkv/store.h"

#define READ_CHUNK (64 * 1024) /* bytes read from the remote per readable event */
#define SYNC_SID   0           /* session id of our requests: one connection, answers in order */
#define SYNC_FROM  "sync"      /* sender id of our requests (the answer goes back on the socket) */

enum phase {
    P_RESOLVE, /* waiting for the resolver thread */
    P_CONNECT, /* non-blocking connect in progress */
    P_PROBE,   /* first ARBORKV.AE request sent: is the remote arborkv? */
    P_NODES,   /* descending the remote's tree */
    P_RECS,    /* a page of remote records requested */
    P_SWEEP,   /* deleting the local keys of a page's range that the remote lacks */
    P_SCAN,    /* fallback: SCAN sent */
    P_GET,     /* fallback: GETs in flight */
    P_HASH,    /* --verify: HASH sent */
    P_DONE,    /* finished (ok or failed): settle() answers and frees */
};

/* A key list: keys packed in a buf, offsets (each key is u32 length + bytes) sorted by key. */
struct keyset {
    struct buf bytes; /* u32 length, key, u32 length, key, ... */
    size_t *offs;     /* n offsets into bytes */
    size_t n, cap;    /* entries used / allocated in offs */
};

struct run {
    struct mirror *m;     /* owner */
    mirror_done_fn *done; /* told when the SYNC ends; NULL once forgotten */
    void *done_arg;
    char host[MIRROR_HOST_MAX + 1]; /* remote host as given */
    char port[8];                   /* remote port, decimal */
    bool full, verify;              /* options */
    enum phase phase;               /* see enum phase */
    bool ok;                        /* P_DONE: succeeded */
    char why[512];                  /* P_DONE and !ok: the client's error message */
    bool line;                      /* talking the line protocol (fallback) rather than RESP */
    int fd;                         /* socket to the remote, -1 when none */
    unsigned mask;                  /* LOOP_* registered for fd */
    struct addrinfo *ais;           /* resolved addresses (freeaddrinfo) */
    struct addrinfo *ai;            /* the address being tried / connected */
    int last_err;                   /* errno of the last failed connect */
    int resolve_fd;                 /* read end of the resolver's pipe, -1 when none */
    uint64_t timer;                 /* step timeout */
    uint64_t tick;                  /* zero-delay timer: next sweep batch */
    struct buf in;                  /* bytes received, not yet consumed */
    struct buf out;                 /* bytes to send; out_pos already sent */
    size_t out_pos;                 /* bytes of out already written */
    struct buf msg;                 /* scratch: an anti-entropy message being built */
    bool eof;                       /* the remote closed its side */
    /* arborkv: */
    struct ae_walk w; /* descent, then the differing leaves */
    bool all;         /* fetching every record (--full, or the shapes differ) */
    struct buf after; /* cursor of the page requested (valid with has_after) */
    bool has_after;
    struct buf next_after; /* cursor for the next page, when more */
    bool more;             /* the last page said more follow */
    /* the sweep of a page's range (lo, hi]: */
    struct keyset rkeys;  /* the remote keys of the range */
    struct buf sweep_pos; /* local keys after this one remain to be looked at */
    bool has_pos;         /* sweep_pos is set (else from the start) */
    struct buf hi;        /* last key of the range (valid with has_hi) */
    bool has_hi;
    /* fallback: */
    uint64_t scan_n;           /* keys announced by "KEYS <n>" */
    bool scan_header;          /* the "KEYS <n>" line was read */
    size_t get_sent, get_done; /* GETs sent / answered, indexes into rkeys */
    uint64_t started_us;       /* loop_now_us() at start */
    uint64_t changed;          /* keys whose live value changed here */
    uint64_t fetched;          /* records or values received */
};

struct mirror {
    struct mirror_env env; /* [borrow] handles */
    struct mirror_opts o;
    struct run *run; /* the SYNC in progress, or NULL */
    struct {
        uint64_t runs, completed, failed, keys_changed, records_fetched, last_ms;
    } stats;
};

/* ---- small helpers ------------------------------------------------------------------------- */

/* SQLite's blob order: memcmp, then the shorter first. */
static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

static void keyset_init(struct keyset *k)
{
    memset(k, 0, sizeof(*k));
    buf_init(&k->bytes);
}

static void keyset_reset(struct keyset *k)
{
    buf_reset(&k->bytes);
    k->n = 0;
}

static void keyset_clear(struct keyset *k)
{
    buf_clear(&k->bytes);
    free(k->offs);
    keyset_init(k);
}

static void keyset_add(struct keyset *k, const uint8_t *key, size_t len)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 256;
        k->offs = xrealloc(k->offs, k->cap * sizeof(*k->offs));
    }
    k->offs[k->n++] = k->bytes.len;
    uint32_t l = (uint32_t) len;
    buf_append(&k->bytes, &l, sizeof(l));
    buf_append(&k->bytes, key, len);
}

static struct slice keyset_get(const struct keyset *k, size_t i)
{
    uint32_t l;
    memcpy(&l, k->bytes.data + k->offs[i], sizeof(l));
    return (struct slice){ k->bytes.data + k->offs[i] + sizeof(l), l };
}

static int cmp_offs(const void *pa, const void *pb, void *arg)
{
    const uint8_t *base = arg;
    size_t a = *(const size_t *) pa, b = *(const size_t *) pb;
    uint32_t la, lb;
    memcpy(&la, base + a, sizeof(la));
    memcpy(&lb, base + b, sizeof(lb));
    return key_cmp(base + a + sizeof(la), la, base + b + sizeof(lb), lb);
}

static void keyset_sort(struct keyset *k)
{
    if (k->n > 1) qsort_r(k->offs, k->n, sizeof(*k->offs), cmp_offs, k->bytes.data);
}

static bool keyset_has(const struct keyset *k, const uint8_t *key, size_t len)
{
    size_t lo = 0, hi = k->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct slice s = keyset_get(k, mid);
        int c = key_cmp(s.p, s.len, key, len);
        if (c == 0) return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static void set_buf(struct buf *b, const uint8_t *p, size_t len)
{
    buf_reset(b);
    buf_append(b, p, len);
}

/* ---- ending a run ---------------------------------------------------------------------------- */

static void fail(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct run *r, const char *fmt, ...)
{
    if (r->phase == P_DONE) return;
    va_list ap;
    va_start(ap, fmt);
    (void) vsnprintf(r->why, sizeof(r->why), fmt, ap);
    va_end(ap);
    r->ok = false;
    r->phase = P_DONE;
}

static void succeed(struct run *r)
{
    r->ok = true;
    r->phase = P_DONE;
}

static void close_socket(struct run *r)
{
    if (r->fd < 0) return;
    loop_del_fd(r->m->env.loop, r->fd);
    (void) close(r->fd);
    r->fd = -1;
    r->mask = 0;
}

static void run_free(struct run *r)
{
    struct loop *l = r->m->env.loop;
    close_socket(r);
    if (r->resolve_fd >= 0) {
        /* The resolver thread, if still running, gets EPIPE and frees its own result. */
        loop_del_fd(l, r->resolve_fd);
        (void) close(r->resolve_fd);
    }
    if (r->timer) loop_cancel_timer(l, r->timer);
    if (r->tick) loop_cancel_timer(l, r->tick);
    if (r->ais) freeaddrinfo(r->ais);
    buf_clear(&r->in);
    buf_clear(&r->out);
    buf_clear(&r->msg);
    buf_clear(&r->after);
    buf_clear(&r->next_after);
    buf_clear(&r->sweep_pos);
    buf_clear(&r->hi);
    keyset_clear(&r->rkeys);
    ae_walk_clear(&r->w);
    free(r);
}

/* Reports the end and frees the run if it has finished. Called last by every handler. */
static void settle(struct run *r)
{
    if (r->phase != P_DONE) return;
    struct mirror *m = r->m;
    uint64_t ms = (loop_now_us() - r->started_us) / 1000;
    m->stats.last_ms = ms;
    m->stats.keys_changed += r->changed;
    if (r->ok) {
        m->stats.completed++;
        log_info("sync: from %s:%s done in %llu ms: %llu keys changed, %llu records fetched",
                 r->host, r->port, (unsigned long long) ms, (unsigned long long) r->changed,
                 (unsigned long long) r->fetched);
    } else {
        m->stats.failed++;
        log_info("sync: from %s:%s failed after %llu ms (%llu keys changed): %s", r->host, r->port,
                 (unsigned long long) ms, (unsigned long long) r->changed, r->why);
    }
    if (r->done) r->done(r->done_arg, r->ok ? NULL : r->why, true);
    m->run = NULL;
    run_free(r);
}

/* ---- timers ---------------------------------------------------------------------------------- */

static void on_timeout(struct loop *l, void *arg)
{
    struct run *r = arg;
    UNUSED(l);
    r->timer = 0;
    int t = r->m->o.timeout_s;
    if (r->phase == P_RESOLVE)
        fail(r, "cannot resolve %s: no answer within %d s", r->host, t);
    else if (r->phase == P_CONNECT)
        fail(r, "cannot connect to %s:%s: no answer within %d s", r->host, r->port, t);
    else
        fail(r, "no reply from %s:%s within %d s", r->host, r->port, t);
    settle(r);
}

/* (Re)starts the step timeout: called whenever the remote made progress or a step began. */
static void arm(struct run *r)
{
    struct loop *l = r->m->env.loop;
    if (r->timer) loop_cancel_timer(l, r->timer);
    r->timer = loop_add_timer(l, (uint64_t) r->m->o.timeout_s * 1000000ULL, on_timeout, r);
}

/* ---- sending --------------------------------------------------------------------------------- */

static void want(struct run *r, unsigned mask)
{
    if (r->fd < 0 || r->mask == mask) return;
    int rc = loop_mod_fd(r->m->env.loop, r->fd, mask);
    if (rc < 0)
        fail(r, "connection to %s:%s: epoll: %s", r->host, r->port, strerror(-rc));
    else
        r->mask = mask;
}

static void flush_out(struct run *r)
{
    while (r->out_pos < r->out.len) {
        ssize_t n = send(r->fd, r->out.data + r->out_pos, r->out.len - r->out_pos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            fail(r, "connection to %s:%s: send: %s", r->host, r->port, strerror(errno));
            return;
        }
        r->out_pos += (size_t) n;
    }
    if (r->out_pos == r->out.len) {
        buf_reset(&r->out);
        r->out_pos = 0;
        want(r, LOOP_READ);
    } else {
        want(r, LOOP_READ | LOOP_WRITE);
    }
}

/* Queues one RESP request of argc bulk strings and sends what the socket takes. */
static void send_resp(struct run *r, size_t argc, const struct slice *argv)
{
    buf_printf(&r->out, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++) {
        buf_printf(&r->out, "$%zu\r\n", argv[i].len);
        buf_append(&r->out, argv[i].p, argv[i].len);
        buf_append(&r->out, "\r\n", 2);
    }
    flush_out(r);
    arm(r);
}

/* Sends r->msg as ARBORKV.AE <msg>. */
static void send_ae(struct run *r)
{
    struct slice argv[2] = { { (const uint8_t *) "ARBORKV.AE", 10 }, { r->msg.data, r->msg.len } };
    send_resp(r, 2, argv);
}

static void send_line(struct run *r, const char *word, const uint8_t *arg, size_t len)
{
    buf_append_str(&r->out, word);
    if (arg) {
        buf_append(&r->out, " ", 1);
        buf_append(&r->out, arg, len);
    }
    buf_append(&r->out, "\r\n", 2);
}

/* ---- applying what the remote holds ---------------------------------------------------------- */

/* Makes the local live state of rec's key equal the remote record rec (mirror.h: local writes).
 * Returns 0, or <0 on a storage error (the run has failed). */
static int apply_record(struct run *r, const struct store_rec *rec)
{
    const struct mirror_env *env = &r->m->env;
    struct store_rec cur;
    int rc = store_get_rec(env->store, rec->key, rec->key_len, &cur);
    if (rc < 0) goto storage;
    int cmp = rc == 1 ? lww_cmp(rec, &cur) : 1;
    if (cmp == 0) return 0;
    bool local_live = rc == 1 && !cur.tombstone;
    bool same_live =
            local_live == !rec->tombstone &&
            (!local_live || (cur.value_len == rec->value_len &&
                             (!rec->value_len || !memcmp(cur.value, rec->value, rec->value_len))));
    if (cmp > 0) {
        /* The remote's record is the newer write: store it as it is, like a repair. */
        rc = kv_apply_remote(env->hlc, env->store, rec);
        if (rc < 0) goto storage; /* the turn has failed (store.h) */
        /* Refused as older than this node's purge horizon (kv_apply.h): SYNC still wants it. */
        if (rc == KV_PURGED && !rec->tombstone &&
            kv_write(env->kv, CODEC_OP_SET, rec->key, rec->key_len, rec->value, rec->value_len, 0) <
                    0)
            goto storage;
    } else if (!same_live) {
        /* Ours is newer, yet SYNC wants the remote's state: a new local write of it. */
        rc = kv_write(env->kv, rec->tombstone ? CODEC_OP_DEL : CODEC_OP_SET, rec->key, rec->key_len,
                      rec->value, rec->value_len, 0);
        if (rc < 0) goto storage;
    }
    if (!same_live) r->changed++;
    return 0;
storage:
    fail(r, "storage error, see the server log");
    return -EIO;
}

/* Fallback: the remote's live value of key (found) or its absence, with no timestamp. */
static int apply_value(struct run *r, const uint8_t *key, size_t klen, bool found,
                       const uint8_t *value, size_t vlen)
{
    const struct mirror_env *env = &r->m->env;
    const uint8_t *v;
    size_t n;
    int rc = store_get(env->store, key, klen, &v, &n);
    if (rc < 0) goto storage;
    if (rc == 0 && !found) return 0;
    if (rc == 1 && found && n == vlen && (!n || !memcmp(v, value, n))) return 0;
    rc = kv_write(env->kv, found ? CODEC_OP_SET : CODEC_OP_DEL, key, klen, value, vlen, 0);
    if (rc < 0) goto storage;
    r->changed++;
    return 0;
storage:
    fail(r, "storage error, see the server log");
    return -EIO;
}

/* ---- the sweep: deleting local keys the remote lacks ---------------------------------------- */

struct sweep_scan {
    struct run *r;
    struct keyset doomed; /* local live keys of the range the remote lacks */
    struct buf last;      /* last key looked at */
    bool any;             /* a key was looked at */
};

static int sweep_key(void *arg, const struct store_rec *rec)
{
    struct sweep_scan *s = arg;
    struct run *r = s->r;
    if (r->has_hi && key_cmp(rec->key, rec->key_len, r->hi.data, r->hi.len) > 0) return 2;
    if (s->doomed.n >= MIRROR_DELETE_BATCH) return 1; /* batch full: resume at this key */
    set_buf(&s->last, rec->key, rec->key_len);
    s->any = true;
    if (!keyset_has(&r->rkeys, rec->key, rec->key_len))
        keyset_add(&s->doomed, rec->key, rec->key_len);
    return 0;
}

static void sweep_done(struct run *r);
static void schedule_sweep(struct run *r);

/* One batch of the sweep; schedules the next one or moves on. */
static void sweep_step(struct run *r)
{
    const struct mirror_env *env = &r->m->env;
    struct sweep_scan s = { .r = r };
    keyset_init(&s.doomed);
    buf_init(&s.last);
    const uint32_t *leaves = NULL;
    uint32_t n = 0;
    if (!r->line && !r->all) {
        leaves = r->w.cur + r->w.chunk;
        n = (uint32_t) r->w.chunk_n;
    }
    int rc;
    if (n)
        rc = ae_scan_leaves(env->ae, leaves, n, r->sweep_pos.data, r->sweep_pos.len, r->has_pos,
                            STORE_SCAN_LIVE | STORE_SCAN_KEYS_ONLY, sweep_key, &s);
    else
        rc = store_scan(env->store, NULL, 0, r->has_pos ? r->sweep_pos.data : NULL,
                        r->sweep_pos.len, STORE_SCAN_LIVE | STORE_SCAN_KEYS_ONLY, sweep_key, &s);
    if (rc < 0) {
        fail(r, "storage error, see the server log");
    } else {
        for (size_t i = 0; i < s.doomed.n && r->phase != P_DONE; i++) {
            struct slice k = keyset_get(&s.doomed, i);
            (void) apply_value(r, k.p, k.len, false, NULL, 0);
        }
        if (s.any) {
            set_buf(&r->sweep_pos, s.last.data, s.last.len);
            r->has_pos = true;
        }
    }
    keyset_clear(&s.doomed);
    buf_clear(&s.last);
    if (r->phase == P_DONE) return;
    if (rc == 1)
        schedule_sweep(r); /* more in this range: next turn, so other clients get their turn */
    else
        sweep_done(r);
}

static void on_tick(struct loop *l, void *arg)
{
    struct run *r = arg;
    UNUSED(l);
    r->tick = 0;
    if (r->phase == P_SWEEP) sweep_step(r);
    settle(r);
}

static void schedule_sweep(struct run *r)
{
    r->tick = loop_add_timer(r->m->env.loop, 0, on_tick, r);
    arm(r); /* the step timeout is not the remote's fault here, but keeps its meaning */
}

/* Starts sweeping the range (lo, hi] of r->after / r->hi with r->rkeys sorted. */
static void start_sweep(struct run *r, const uint8_t *lo, size_t lo_len, bool has_lo)
{
    keyset_sort(&r->rkeys);
    r->phase = P_SWEEP;
    r->has_pos = has_lo;
    set_buf(&r->sweep_pos, lo, lo_len);
    sweep_step(r);
}

/* ---- arborkv: descent and pages -------------------------------------------------------------- */

static void finish_or_verify(struct run *r);

/* Asks for the next page of the current leaves (or of all records). */
static void request_page(struct run *r)
{
    const uint32_t *leaves = NULL;
    uint32_t n = 0;
    if (!r->all) {
        leaves = r->w.cur + r->w.chunk;
        n = (uint32_t) r->w.chunk_n;
    }
    ae_recs_req(SYNC_SID, SYNC_FROM, leaves, n, r->after.data, r->after.len, r->has_after, &r->msg);
    r->phase = P_RECS;
    send_ae(r);
}

/* Moves to the next chunk of differing leaves, or ends. */
static void next_chunk(struct run *r)
{
    if (r->all || !ae_walk_next_leaves(&r->w)) {
        finish_or_verify(r);
        return;
    }
    r->has_after = false;
    buf_reset(&r->after);
    request_page(r);
}

static void sweep_done(struct run *r)
{
    if (r->line) { /* fallback: the GETs come next */
        r->phase = P_GET;
        r->get_sent = r->get_done = 0;
        if (r->rkeys.n == 0) {
            finish_or_verify(r);
            return;
        }
        for (; r->get_sent < r->rkeys.n && r->get_sent < MIRROR_GET_WINDOW; r->get_sent++) {
            struct slice k = keyset_get(&r->rkeys, r->get_sent);
            send_line(r, "GET", k.p, k.len);
        }
        flush_out(r);
        arm(r);
        return;
    }
    if (r->more) {
        set_buf(&r->after, r->next_after.data, r->next_after.len);
        r->has_after = true;
        request_page(r);
    } else {
        next_chunk(r);
    }
}

static void start_all(struct run *r)
{
    r->all = true;
    r->has_after = false;
    buf_reset(&r->after);
    request_page(r);
}

static void on_nodes(struct run *r, const uint8_t *p, size_t len)
{
    const struct mirror_env *env = &r->m->env;
    int rc = ae_walk_on_nodes(env->ae, &r->w, SYNC_SID, p, len);
    switch (rc) {
    case AE_WALK_NODES:
        ae_walk_nodes_req(&r->w, SYNC_SID, SYNC_FROM, &r->msg);
        r->phase = P_NODES;
        send_ae(r);
        return;
    case AE_WALK_LEAVES:
        next_chunk(r);
        return;
    case AE_WALK_EQUAL:
        finish_or_verify(r);
        return;
    case -EPROTO:
        log_info("sync: %s:%s has a %ux%u tree, this node %ux%u: transferring every record",
                 r->host, r->port, r->w.peer_fanout, r->w.peer_depth, merkle_fanout(env->tree),
                 merkle_depth(env->tree));
        start_all(r);
        return;
    default:
        fail(r, "malformed anti-entropy answer from %s:%s", r->host, r->port);
        return;
    }
}

static void on_page(struct run *r, const uint8_t *p, size_t len)
{
    struct ae_recs pg;
    if (ae_recs_open(&pg, SYNC_SID, p, len) < 0 || pg.push) {
        fail(r, "malformed records answer from %s:%s", r->host, r->port);
        return;
    }
    if (pg.more && r->has_after &&
        key_cmp(pg.after.p, pg.after.len, r->after.data, r->after.len) <= 0) {
        fail(r, "records answer from %s:%s does not advance", r->host, r->port);
        return;
    }
    keyset_reset(&r->rkeys);
    struct store_rec rec;
    int rc;
    while ((rc = ae_recs_next(&pg, &rec)) == 1) {
        r->fetched++;
        r->m->stats.records_fetched++;
        keyset_add(&r->rkeys, rec.key, rec.key_len);
        if (apply_record(r, &rec) < 0) return;
    }
    if (rc < 0) {
        fail(r, "malformed records answer from %s:%s", r->host, r->port);
        return;
    }
    r->more = pg.more;
    r->has_hi = pg.more;
    set_buf(&r->hi, pg.after.p, pg.after.len);
    set_buf(&r->next_after, pg.after.p, pg.after.len);
    start_sweep(r, r->after.data, r->after.len, r->has_after);
}

/* ---- --verify -------------------------------------------------------------------------------- */

static void finish_or_verify(struct run *r)
{
    if (!r->verify) {
        succeed(r);
        return;
    }
    r->phase = P_HASH;
    if (r->line) {
        send_line(r, "HASH", NULL, 0);
        flush_out(r);
        arm(r);
    } else {
        struct slice argv[1] = { { (const uint8_t *) "HASH", 4 } };
        send_resp(r, 1, argv);
    }
}

static void on_remote_hash(struct run *r, const uint8_t *hex, size_t len)
{
    uint8_t mine[KV_DIGEST_LEN];
    char mine_hex[2 * KV_DIGEST_LEN + 1];
    if (len != 2 * KV_DIGEST_LEN) {
        fail(r, "--verify: unexpected HASH reply from %s:%s", r->host, r->port);
        return;
    }
    if (kv_live_digest(r->m->env.store, NULL, 0, mine) < 0) {
        fail(r, "storage error, see the server log");
        return;
    }
    (void) sodium_bin2hex(mine_hex, sizeof(mine_hex), mine, sizeof(mine));
    if (memcmp(mine_hex, hex, len) != 0)
        fail(r, "--verify failed: local HASH %s, remote HASH %.*s", mine_hex, (int) len,
             (const char *) hex);
    else
        succeed(r);
}

/* ---- replies --------------------------------------------------------------------------------- */

enum reply_kind { R_BULK, R_NULL, R_ERROR, R_SIMPLE, R_INT, R_LINE };

struct reply {
    enum reply_kind kind;
    const uint8_t *p; /* [borrow] payload (bulk bytes, error/simple text, line without CRLF) */
    size_t len;
};

/*
 * Parses the next reply at r->in[*pos]: RESP (bulk, null, error, simple, integer) or, on the
 * line protocol, one line. Returns 1 and advances *pos, 0 when incomplete, -1 on a malformed or
 * oversized reply.
 */
static int next_reply(struct run *r, size_t *pos, struct reply *rep)
{
    const uint8_t *p = r->in.data + *pos;
    size_t avail = r->in.len - *pos;
    size_t limit = r->line ? MIRROR_MAX_LINE : RESP_MAX_LINE_BYTES;
    const uint8_t *nl = avail ? memchr(p, '\n', avail < limit ? avail : limit) : NULL;
    if (!nl) return avail >= limit ? -1 : 0;
    size_t line_len = (size_t) (nl - p);
    size_t used = line_len + 1;
    if (line_len && p[line_len - 1] == '\r') line_len--;
    if (r->line) {
        *rep = (struct reply){ R_LINE, p, line_len };
        *pos += used;
        return 1;
    }
    if (line_len == 0) return -1;
    switch (p[0]) {
    case '-':
        *rep = (struct reply){ R_ERROR, p + 1, line_len - 1 };
        break;
    case '+':
        *rep = (struct reply){ R_SIMPLE, p + 1, line_len - 1 };
        break;
    case ':':
        *rep = (struct reply){ R_INT, p + 1, line_len - 1 };
        break;
    case '$': {
        int64_t n;
        if (!parse_i64(p + 1, line_len - 1, &n) || n < -1 || n > (int64_t) MIRROR_MAX_BULK)
            return -1;
        if (n == -1) {
            *rep = (struct reply){ R_NULL, NULL, 0 };
            break;
        }
        if (avail < used + (size_t) n + 2) return 0;
        if (p[used + (size_t) n] != '\r' || p[used + (size_t) n + 1] != '\n') return -1;
        *rep = (struct reply){ R_BULK, p + used, (size_t) n };
        used += (size_t) n + 2;
        break;
    }
    default:
        return -1;
    }
    *pos += used;
    return 1;
}

static void start_connect(struct run *r);

/* The remote did not take ARBORKV.AE: reconnect and use the line protocol (a fresh connection,
 * since the protocol of a connection is chosen by its first byte). */
static void fall_back(struct run *r)
{
    log_info("sync: %s:%s does not speak arborkv's anti-entropy: SCAN and GET over the line "
             "protocol",
             r->host, r->port);
    close_socket(r);
    buf_reset(&r->in);
    buf_reset(&r->out);
    r->out_pos = 0;
    r->eof = false;
    r->line = true;
    start_connect(r); /* the address that worked first */
}

static bool starts_with(const struct reply *rep, const char *s)
{
    size_t n = strlen(s);
    return rep->len >= n && memcmp(rep->p, s, n) == 0;
}

/* One fallback line: SCAN's header and keys, GET replies, HASH. */
static void on_line(struct run *r, const struct reply *rep)
{
    if (r->phase == P_SCAN && !r->scan_header) {
        int64_t n;
        if (starts_with(rep, "ERROR")) {
            fail(r, "remote error: %.*s", (int) rep->len, (const char *) rep->p);
            return;
        }
        if (!starts_with(rep, "KEYS ") || !parse_i64(rep->p + 5, rep->len - 5, &n) || n < 0) {
            fail(r, "unexpected SCAN reply from %s:%s", r->host, r->port);
            return;
        }
        r->scan_header = true;
        r->scan_n = (uint64_t) n;
    } else if (r->phase == P_SCAN) {
        if (rep->len) keyset_add(&r->rkeys, rep->p, rep->len);
        r->scan_n--;
    } else if (r->phase == P_GET) {
        struct slice k = keyset_get(&r->rkeys, r->get_done);
        if (starts_with(rep, "VALUE ")) {
            r->fetched++;
            r->m->stats.records_fetched++;
            (void) apply_value(r, k.p, k.len, true, rep->p + 6, rep->len - 6);
        } else if (rep->len == 9 && starts_with(rep, "NOT_FOUND")) {
            (void) apply_value(r, k.p, k.len, false, NULL, 0); /* deleted meanwhile */
        } else {
            fail(r, "GET %.*s: %.*s", (int) (k.len < 200 ? k.len : 200), (const char *) k.p,
                 (int) (rep->len < 200 ? rep->len : 200), (const char *) rep->p);
            return;
        }
        r->get_done++;
        if (r->phase == P_DONE) return;
        if (r->get_sent < r->rkeys.n) {
            struct slice nk = keyset_get(&r->rkeys, r->get_sent++);
            send_line(r, "GET", nk.p, nk.len);
            flush_out(r);
        }
        if (r->get_done == r->rkeys.n) finish_or_verify(r);
        return;
    } else if (r->phase == P_HASH) {
        if (starts_with(rep, "HASH "))
            on_remote_hash(r, rep->p + 5, rep->len - 5);
        else
            fail(r, "--verify: %s:%s cannot HASH: %.*s", r->host, r->port,
                 (int) (rep->len < 200 ? rep->len : 200), (const char *) rep->p);
        return;
    } else {
        fail(r, "unexpected reply from %s:%s", r->host, r->port);
        return;
    }
    if (r->phase == P_SCAN && r->scan_header && r->scan_n == 0) {
        /* Every remote key known: delete the local ones it lacks, then GET the values. */
        start_sweep(r, NULL, 0, false);
    }
}

/* One RESP reply on the arborkv path. */
static void on_resp(struct run *r, const struct reply *rep)
{
    if (r->phase == P_PROBE && rep->kind == R_ERROR) {
        fall_back(r);
        return;
    }
    if (rep->kind == R_ERROR) {
        fail(r, "remote error: %.*s", (int) (rep->len < 300 ? rep->len : 300),
             (const char *) rep->p);
        return;
    }
    if (rep->kind != R_BULK) {
        fail(r, "unexpected reply from %s:%s", r->host, r->port);
        return;
    }
    switch (r->phase) {
    case P_PROBE:
    case P_NODES:
        if (r->all)
            on_page(r, rep->p, rep->len);
        else
            on_nodes(r, rep->p, rep->len);
        return;
    case P_RECS:
        on_page(r, rep->p, rep->len);
        return;
    case P_HASH:
        on_remote_hash(r, rep->p, rep->len);
        return;
    default:
        fail(r, "unexpected reply from %s:%s", r->host, r->port);
        return;
    }
}

/* Handles the complete replies received so far. */
static void process_replies(struct run *r)
{
    size_t pos = 0;
    while (r->phase != P_DONE && r->phase != P_SWEEP && r->fd >= 0) {
        struct reply rep;
        bool was_line = r->line;
        int rc = next_reply(r, &pos, &rep);
        if (rc == 0) break;
        if (rc < 0) {
            if (r->phase == P_PROBE) { /* not a RESP server at all */
                fall_back(r);
                return;
            }
            fail(r, "malformed reply from %s:%s", r->host, r->port);
            return;
        }
        arm(r); /* progress */
        if (r->line)
            on_line(r, &rep);
        else
            on_resp(r, &rep);
        if (was_line != r->line || r->fd < 0) return; /* fell back: r->in was reset */
    }
    if (pos) buf_consume(&r->in, pos);
    if (r->phase == P_DONE || r->phase == P_SWEEP) return;
    if (r->eof) {
        if (r->phase == P_PROBE)
            fall_back(r); /* closed on our RESP request: maybe a line-only server */
        else
            fail(r, "%s:%s closed the connection", r->host, r->port);
    }
}

/* ---- connection ------------------------------------------------------------------------------ */

/* Connected: the first request. */
static void on_connected(struct run *r)
{
    int one = 1;
    (void) setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    want(r, LOOP_READ);
    if (r->line) {
        r->phase = P_SCAN;
        r->scan_header = false;
        keyset_reset(&r->rkeys);
        send_line(r, "SCAN", NULL, 0);
        flush_out(r);
        arm(r);
        return;
    }
    /* The probe is the first real request: the root's children (or, with --full, the first
     * page of every record). A server that does not know ARBORKV.AE answers it with an error. */
    r->phase = P_PROBE;
    if (r->full) {
        r->all = true;
        ae_recs_req(SYNC_SID, SYNC_FROM, NULL, 0, NULL, 0, false, &r->msg);
    } else {
        ae_walk_nodes_req(&r->w, SYNC_SID, SYNC_FROM, &r->msg);
    }
    send_ae(r);
}

static void on_remote(struct loop *l, int fd, unsigned events, void *arg)
{
    struct run *r = arg;
    UNUSED(l);
    UNUSED(fd);
    if (r->phase == P_CONNECT) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) {
            r->last_err = err;
            close_socket(r);
            r->ai = r->ai->ai_next;
            start_connect(r);
        } else {
            on_connected(r);
        }
        settle(r);
        return;
    }
    if ((events & LOOP_WRITE) && r->phase != P_DONE) flush_out(r);
    if ((events & LOOP_READ) && r->phase != P_DONE && r->fd >= 0) {
        buf_reserve(&r->in, READ_CHUNK);
        ssize_t n = read(r->fd, r->in.data + r->in.len, READ_CHUNK);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            if (r->phase == P_PROBE)
                fall_back(r);
            else
                fail(r, "connection to %s:%s: %s", r->host, r->port, strerror(errno));
        } else if (n == 0) {
            r->eof = true;
            want(r, 0);
        } else if (n > 0) {
            r->in.len += (size_t) n;
        }
        if (r->phase != P_DONE && r->phase != P_SWEEP && r->phase != P_CONNECT && n != -1)
            process_replies(r);
    }
    settle(r);
}

/* Tries r->ai and the addresses after it; fails the run when none is left. */
static void start_connect(struct run *r)
{
    for (; r->ai; r->ai = r->ai->ai_next) {
        int fd = socket(r->ai->ai_family, r->ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        r->ai->ai_protocol);
        if (fd < 0) {
            r->last_err = errno;
            continue;
        }
        int rc = connect(fd, r->ai->ai_addr, r->ai->ai_addrlen);
        if (rc < 0 && errno != EINPROGRESS) {
            r->last_err = errno;
            (void) close(fd);
            continue;
        }
        unsigned mask = rc == 0 ? LOOP_READ : LOOP_WRITE;
        int lrc = loop_add_fd(r->m->env.loop, fd, mask, on_remote, r);
        if (lrc < 0) {
            r->last_err = -lrc;
            (void) close(fd);
            continue;
        }
        r->fd = fd;
        r->mask = mask;
        if (rc == 0) {
            on_connected(r);
        } else {
            r->phase = P_CONNECT;
            arm(r);
        }
        return;
    }
    fail(r, "cannot connect to %s:%s: %s", r->host, r->port,
         strerror(r->last_err ? r->last_err : ECONNREFUSED));
}

/* ---- resolving ------------------------------------------------------------------------------- */

struct resolve_job {
    char host[MIRROR_HOST_MAX + 1]; /* name to resolve */
    char port[8];                   /* service, decimal */
    int wfd;                        /* write end of the pipe; the thread closes it */
};

struct resolve_result {
    int gai;              /* getaddrinfo's return */
    struct addrinfo *res; /* its result when gai == 0 */
};

static const struct addrinfo resolve_hints = { .ai_family = AF_UNSPEC,
                                               .ai_socktype = SOCK_STREAM,
                                               .ai_flags = AI_NUMERICSERV };

/* The resolver thread: getaddrinfo may block for seconds (DNS), so it never runs on the loop.
 * It owns the job; the result is handed over as a pointer written to the pipe, or freed here if
 * nobody reads it any more (the SYNC ended: EPIPE, SIGPIPE is ignored by the process). */
static void *resolve_thread(void *arg)
{
    struct resolve_job *j = arg;
    struct resolve_result *res = xcalloc(1, sizeof(*res));
    res->gai = getaddrinfo(j->host, j->port, &resolve_hints, &res->res);
    ssize_t n;
    do
        n = write(j->wfd, &res, sizeof(res));
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t) sizeof(res)) {
        if (res->res) freeaddrinfo(res->res);
        free(res);
    }
    (void) close(j->wfd);
    free(j);
    return NULL;
}

static void on_resolved(struct loop *l, int fd, unsigned events, void *arg)
{
    struct run *r = arg;
    struct resolve_result *res = NULL;
    UNUSED(events);
    ssize_t n = read(fd, &res, sizeof(res));
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    loop_del_fd(l, fd);
    (void) close(fd);
    r->resolve_fd = -1;
    if (n != (ssize_t) sizeof(res)) {
        fail(r, "cannot resolve %s: resolver failed", r->host);
    } else if (res->gai != 0) {
        fail(r, "cannot resolve %s: %s", r->host, gai_strerror(res->gai));
    } else {
        r->ais = r->ai = res->res;
        start_connect(r);
    }
    free(res);
    settle(r);
}

/* Numeric addresses are parsed on the spot; names go to a resolver thread. */
static void start_resolve(struct run *r)
{
    struct addrinfo hints = resolve_hints;
    hints.ai_flags |= AI_NUMERICHOST;
    int gai = getaddrinfo(r->host, r->port, &hints, &r->ais);
    if (gai == 0) {
        r->ai = r->ais;
        start_connect(r);
        return;
    }
    if (gai != EAI_NONAME) {
        r->ais = NULL;
        fail(r, "cannot resolve %s: %s", r->host, gai_strerror(gai));
        return;
    }
    r->ais = NULL;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        fail(r, "cannot resolve %s: pipe: %s", r->host, strerror(errno));
        return;
    }
    struct resolve_job *j = xcalloc(1, sizeof(*j));
    memcpy(j->host, r->host, sizeof(j->host));
    memcpy(j->port, r->port, sizeof(j->port));
    j->wfd = fds[1];
    int rc = loop_add_fd(r->m->env.loop, fds[0], LOOP_READ, on_resolved, r);
    pthread_attr_t attr;
    pthread_t t;
    int prc = rc < 0 ? -rc : pthread_attr_init(&attr);
    if (prc == 0) {
        (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        prc = pthread_create(&t, &attr, resolve_thread, j);
        (void) pthread_attr_destroy(&attr);
    }
    if (prc != 0) {
        if (rc == 0) loop_del_fd(r->m->env.loop, fds[0]);
        (void) close(fds[0]);
        (void) close(fds[1]);
        free(j);
        fail(r, "cannot resolve %s: %s", r->host, strerror(prc));
        return;
    }
    r->resolve_fd = fds[0];
    r->phase = P_RESOLVE;
    arm(r);
}

/* ---- interface ------------------------------------------------------------------------------- */

int mirror_start(struct mirror *m, const char *host, int port, bool full, bool verify,
                 mirror_done_fn *done, void *done_arg, char *err, size_t errlen)
{
    assert(m && host && done);
    if (m->run) {
        (void) snprintf(err, errlen, "SYNC already in progress");
        return -EBUSY;
    }
    size_t hlen = strlen(host);
    if (hlen == 0 || hlen > MIRROR_HOST_MAX) {
        (void) snprintf(err, errlen, "Invalid host: must be 1 to %d bytes", MIRROR_HOST_MAX);
        return -EINVAL;
    }
    struct run *r = xcalloc(1, sizeof(*r));
    r->m = m;
    memcpy(r->host, host, hlen + 1);
    (void) snprintf(r->port, sizeof(r->port), "%d", port);
    r->full = full;
    r->verify = verify;
    r->fd = r->resolve_fd = -1;
    r->started_us = loop_now_us();
    buf_init(&r->in);
    buf_init(&r->out);
    buf_init(&r->msg);
    buf_init(&r->after);
    buf_init(&r->next_after);
    buf_init(&r->sweep_pos);
    buf_init(&r->hi);
    keyset_init(&r->rkeys);
    ae_walk_init(&r->w);
    m->run = r;
    m->stats.runs++;
    if (!m->env.ae)
        fail(r, "anti-entropy is not available on this node");
    else
        start_resolve(r);
    if (r->phase == P_DONE) {
        /* Failed at once (a bad address, a connection refused on the spot): the caller answers,
         * the client was never blocked. */
        (void) snprintf(err, errlen, "%s", r->why);
        m->stats.failed++;
        log_info("sync: from %s:%s failed: %s", r->host, r->port, r->why);
        m->run = NULL;
        run_free(r);
        return -ECONNREFUSED;
    }
    /* Nothing ran settle() yet: every later step is a loop event. */
    r->done = done;
    r->done_arg = done_arg;
    return 0;
}

void mirror_forget(struct mirror *m)
{
    if (m && m->run) m->run->done = NULL; /* the SYNC goes on; nobody is told */
}

int mirror_new(struct mirror **out, const struct mirror_env *env, const struct mirror_opts *o)
{
    struct mirror *m = xcalloc(1, sizeof(*m));
    assert(env && env->loop && env->store && env->tree && env->hlc && env->kv);
    m->env = *env;
    m->o = *o;
    if (m->o.timeout_s < 1) m->o.timeout_s = 1;
    *out = m;
    return 0;
}

void mirror_free(struct mirror *m)
{
    if (!m) return;
    if (m->run) {
        struct run *r = m->run;
        if (r->done) r->done(r->done_arg, NULL, false); /* not answered: going away */
        run_free(r);
    }
    free(m);
}

void mirror_info(const struct mirror *m, struct buf *b)
{
    static const struct mirror empty;
    if (!m) m = &empty;
    buf_add_field(b, "sync_runs", m->stats.runs);
    buf_add_field(b, "sync_completed", m->stats.completed);
    buf_add_field(b, "sync_failures", m->stats.failed);
    buf_add_field(b, "sync_running", m->run != NULL);
    buf_add_field(b, "sync_keys_changed", m->stats.keys_changed + (m->run ? m->run->changed : 0));
    buf_add_field(b, "sync_records_fetched", m->stats.records_fetched);
    buf_add_field(b, "sync_last_ms", m->stats.last_ms);
}
