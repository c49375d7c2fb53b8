/* SPDX-License-Identifier: MIT */
/*
 * cmd_kv: data commands (protocol.md §3 and §5) on top of the store.
 *
 * Every write is a new local operation: an HLC timestamp, 16 random bytes of op_id
 * (replication.md §1) and an upsert in the turn's transaction; a delete writes a tombstone.
 * Values borrowed from store_get are invalidated by the next store call, so handlers that read
 * then write copy what they still need into the command layer's scratch buffer first.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "arborkv/buf.h"
#include "arborkv/client.h"
#include "arborkv/glob.h"
#include "arborkv/hlc.h"
#include "arborkv/kv.h"
#include "arborkv/log.h"
#include "arborkv/mem.h"
#include "arborkv/repl.h"
#include "arborkv/resp.h"
#include "arborkv/server.h"
#include "arborkv/store.h"
#include "cmd_int.h"

#define SCAN_DEFAULT_COUNT 10     /* RESP SCAN COUNT default, as in Redis */
#define SCAN_MAX_COUNT     100000 /* keys examined by one RESP SCAN call at most */
#define HASH_HEX_LEN       64     /* protocol.md §3: HASH is 64 lowercase hex digits */

struct scan_cursor {
    uint64_t id;     /* cursor value handed to the client; 0 = free slot */
    struct buf last; /* last key examined: the next call continues after it */
};

static struct cmd_state *state(struct cmd_ctx *x)
{
    return x->srv->cmd_state;
}

/* Copies the live value of key into dst. Returns 1 found, 0 absent, <0 storage error. */
static int get_copy(struct cmd_ctx *x, const struct slice *key, struct buf *dst)
{
    const uint8_t *v;
    size_t n;
    buf_reset(dst);
    int rc = store_get(x->srv->store, key->p, key->len, &v, &n);
    if (rc == 1) buf_append(dst, v, n);
    return rc;
}

void cmd_get(struct cmd_ctx *x)
{
    const uint8_t *v;
    size_t n;
    int rc = store_get(x->srv->store, x->argv[1].p, x->argv[1].len, &v, &n);
    if (rc < 0)
        reply_storage_error(x);
    else if (rc == 0)
        reply_not_found(x);
    else
        reply_value(x, v, n);
}

void cmd_strlen(struct cmd_ctx *x)
{
    const uint8_t *v;
    size_t n = 0;
    int rc = store_get(x->srv->store, x->argv[1].p, x->argv[1].len, &v, &n);
    if (rc < 0)
        reply_storage_error(x);
    else
        resp_add_int(x->out, rc ? (int64_t) n : 0);
}

void cmd_set(struct cmd_ctx *x)
{
    const struct slice *key = &x->argv[1], *val = &x->argv[2];
    bool nx = false, xx = false, get = false;
    for (size_t i = 3; i < x->argc; i++) {
        const struct slice *o = &x->argv[i];
        if (slice_is(o, "NX"))
            nx = true;
        else if (slice_is(o, "XX"))
            xx = true;
        else if (slice_is(o, "GET"))
            get = true;
        else if (slice_is(o, "KEEPTTL"))
            continue; /* no TTLs: keeping none is a no-op */
        else if (slice_is(o, "EX") || slice_is(o, "PX") || slice_is(o, "EXAT") ||
                 slice_is(o, "PXAT")) {
            reply_error(x, "key expiry (EX/PX/EXAT/PXAT) is not supported by arborkv");
            return;
        } else {
            reply_error(x, "syntax error");
            return;
        }
    }
    if (nx && xx) {
        reply_error(x, "syntax error");
        return;
    }
    int found = 0;
    struct buf *old = &state(x)->tmp;
    if (nx || xx || get) {
        found = get_copy(x, key, old);
        if (found < 0) {
            reply_storage_error(x);
            return;
        }
    }
    if ((nx && found) || (xx && !found)) {
        if (get && found)
            reply_value(x, old->data, old->len);
        else
            reply_not_found(x);
        return;
    }
    if (kv_write(&x->srv->kv, CODEC_OP_SET, key->p, key->len, val->p, val->len, 0) < 0) {
        reply_storage_error(x);
        return;
    }
    if (!get)
        reply_ok(x);
    else if (found)
        reply_value(x, old->data, old->len);
    else
        reply_not_found(x);
}

void cmd_setnx(struct cmd_ctx *x)
{
    const uint8_t *v;
    size_t n;
    int rc = store_get(x->srv->store, x->argv[1].p, x->argv[1].len, &v, &n);
    if (rc == 0)
        rc = kv_write(&x->srv->kv, CODEC_OP_SET, x->argv[1].p, x->argv[1].len, x->argv[2].p,
                      x->argv[2].len, 0) < 0
                     ? -EIO
                     : 0;
    else if (rc == 1) {
        resp_add_int(x->out, 0);
        return;
    }
    if (rc < 0)
        reply_storage_error(x);
    else
        resp_add_int(x->out, 1);
}

void cmd_getset(struct cmd_ctx *x)
{
    struct buf *old = &state(x)->tmp;
    int found = get_copy(x, &x->argv[1], old);
    if (found < 0 || kv_write(&x->srv->kv, CODEC_OP_SET, x->argv[1].p, x->argv[1].len, x->argv[2].p,
                              x->argv[2].len, 0) < 0) {
        reply_storage_error(x);
        return;
    }
    if (found)
        reply_value(x, old->data, old->len);
    else
        reply_not_found(x);
}

void cmd_getdel(struct cmd_ctx *x)
{
    struct buf *old = &state(x)->tmp;
    int found = get_copy(x, &x->argv[1], old);
    if (found < 0 || (found && kv_write(&x->srv->kv, CODEC_OP_DEL, x->argv[1].p, x->argv[1].len,
                                        NULL, 0, 0) < 0)) {
        reply_storage_error(x);
        return;
    }
    if (found)
        reply_value(x, old->data, old->len);
    else
        reply_not_found(x);
}

/* Deletes key if live. Returns 1 deleted, 0 absent, <0 storage error. */
static int delete_key(struct cmd_ctx *x, const struct slice *key)
{
    const uint8_t *v;
    size_t n;
    int rc = store_get(x->srv->store, key->p, key->len, &v, &n);
    if (rc != 1) return rc;
    return kv_write(&x->srv->kv, CODEC_OP_DEL, key->p, key->len, NULL, 0, 0) < 0 ? -EIO : 1;
}

void cmd_del(struct cmd_ctx *x)
{
    if (!x->resp) {
        /* protocol.md §3: DEL/DELETE take one key; DELETED if it existed, else NOT_FOUND. */
        int rc = delete_key(x, &x->argv[1]);
        if (rc < 0)
            reply_storage_error(x);
        else
            reply_status(x, rc ? "DELETED" : "NOT_FOUND");
        return;
    }
    int64_t n = 0;
    for (size_t i = 1; i < x->argc; i++) {
        int rc = delete_key(x, &x->argv[i]);
        if (rc < 0) {
            reply_storage_error(x);
            return;
        }
        n += rc;
    }
    resp_add_int(x->out, n);
}

void cmd_incrby(struct cmd_ctx *x)
{
    const struct slice *key = &x->argv[1];
    const struct slice *name = &x->argv[0];
    bool decr = slice_is(name, "DECR") || slice_is(name, "DECRBY");
    int64_t amount = 1, cur = 0, result;
    if (x->argc > 2 && !parse_i64(x->argv[2].p, x->argv[2].len, &amount)) {
        /* Only RESP gets here: line.c validated the amount already. */
        reply_error(x, "value is not an integer or out of range");
        return;
    }
    if (decr) {
        if (amount == INT64_MIN) {
            /* Redis's wording over RESP; the line protocol has one overflow message (§3). */
            reply_error(x, x->resp ? "decrement would overflow"
                                   : "increment or decrement would overflow");
            return;
        }
        amount = -amount;
    }
    const uint8_t *v;
    size_t n;
    int rc = store_get(x->srv->store, key->p, key->len, &v, &n);
    if (rc < 0) {
        reply_storage_error(x);
        return;
    }
    if (rc == 1 && !parse_i64(v, n, &cur)) {
        if (x->resp)
            reply_error(x, "value is not an integer or out of range");
        else
            reply_error(x, "Value for key '%.*s' is not a valid number", (int) key->len,
                        (const char *) key->p);
        return;
    }
    if (__builtin_add_overflow(cur, amount, &result)) {
        reply_error(x, "increment or decrement would overflow");
        return;
    }
    char digits[24];
    int len = snprintf(digits, sizeof(digits), "%lld", (long long) result);
    if (kv_write(&x->srv->kv, decr ? CODEC_OP_DECR : CODEC_OP_INCR, key->p, key->len,
                 (const uint8_t *) digits, (size_t) len, 0) < 0) {
        reply_storage_error(x);
        return;
    }
    reply_int_named(x, "VALUE", result);
}

void cmd_append(struct cmd_ctx *x)
{
    const struct slice *key = &x->argv[1], *arg = &x->argv[2];
    bool prepend = slice_is(&x->argv[0], "PREPEND");
    struct buf *val = &state(x)->tmp;
    buf_reset(val);
    const uint8_t *v;
    size_t n;
    int rc = store_get(x->srv->store, key->p, key->len, &v, &n);
    if (rc < 0) {
        reply_storage_error(x);
        return;
    }
    buf_reserve(val, arg->len + (rc ? n : 0));
    if (prepend) buf_append(val, arg->p, arg->len);
    if (rc) buf_append(val, v, n);
    if (!prepend) buf_append(val, arg->p, arg->len);
    if (kv_write(&x->srv->kv, prepend ? CODEC_OP_PREPEND : CODEC_OP_APPEND, key->p, key->len,
                 val->data, val->len, 0) < 0) {
        reply_storage_error(x);
        return;
    }
    /* Line: the new whole value (protocol.md §3); RESP: its length, as Redis's APPEND. */
    if (x->resp)
        resp_add_int(x->out, (int64_t) val->len);
    else
        reply_value(x, val->data, val->len);
}

void cmd_mget(struct cmd_ctx *x)
{
    if (x->resp) {
        resp_add_array_len(x->out, x->argc - 1);
        for (size_t i = 1; i < x->argc; i++) {
            const uint8_t *v;
            size_t n;
            int rc = store_get(x->srv->store, x->argv[i].p, x->argv[i].len, &v, &n);
            if (rc == 1)
                resp_add_bulk(x->out, v, n);
            else
                resp_add_null(x->out); /* a storage error reads as a miss, logged by store */
        }
        return;
    }
    /* protocol.md §3: "VALUES <found>" then one line per key, or NOT_FOUND if none found. */
    struct buf *body = &state(x)->tmp;
    buf_reset(body);
    int64_t found = 0;
    for (size_t i = 1; i < x->argc; i++) {
        const uint8_t *v;
        size_t n;
        int rc = store_get(x->srv->store, x->argv[i].p, x->argv[i].len, &v, &n);
        if (rc < 0) {
            reply_storage_error(x);
            return;
        }
        buf_append(body, x->argv[i].p, x->argv[i].len);
        if (rc == 1) {
            found++;
            buf_append(body, " ", 1);
            buf_append(body, v, n);
            buf_append(body, "\r\n", 2);
        } else {
            buf_append(body, " NOT_FOUND\r\n", 12);
        }
    }
    if (found == 0) {
        reply_not_found(x);
        return;
    }
    buf_append_str(x->out, "VALUES ");
    buf_append_i64(x->out, found);
    buf_append(x->out, "\r\n", 2);
    buf_append(x->out, body->data, body->len);
}

void cmd_mset(struct cmd_ctx *x)
{
    if ((x->argc - 1) % 2 != 0) {
        reply_error(x, "wrong number of arguments for 'mset' command");
        return;
    }
    for (size_t i = 1; i + 1 < x->argc; i += 2) {
        if (kv_write(&x->srv->kv, CODEC_OP_SET, x->argv[i].p, x->argv[i].len, x->argv[i + 1].p,
                     x->argv[i + 1].len, 0) < 0) {
            reply_storage_error(x);
            return;
        }
    }
    reply_ok(x);
}

void cmd_exists(struct cmd_ctx *x)
{
    int64_t n = 0;
    for (size_t i = 1; i < x->argc; i++) {
        const uint8_t *v;
        size_t len;
        int rc = store_get(x->srv->store, x->argv[i].p, x->argv[i].len, &v, &len);
        if (rc < 0) {
            reply_storage_error(x);
            return;
        }
        n += rc;
    }
    reply_int_named(x, "EXISTS", n);
}

void cmd_dbsize(struct cmd_ctx *x)
{
    reply_int_named(x, "DBSIZE", (int64_t) store_live_count(x->srv->store));
}

void cmd_type(struct cmd_ctx *x)
{
    const uint8_t *v;
    size_t n;
    int rc = store_get(x->srv->store, x->argv[1].p, x->argv[1].len, &v, &n);
    if (rc < 0)
        reply_storage_error(x);
    else
        resp_add_simple(x->out, rc ? "string" : "none");
}

void cmd_ttl(struct cmd_ctx *x)
{
    const uint8_t *v;
    size_t n;
    int rc = store_get(x->srv->store, x->argv[1].p, x->argv[1].len, &v, &n);
    if (rc < 0)
        reply_storage_error(x);
    else if (slice_is(&x->argv[0], "PERSIST"))
        resp_add_int(x->out, 0);
    else
        resp_add_int(x->out, rc ? -1 : -2); /* no expiry support: live keys never expire */
}

/* Collects keys as (size_t length, bytes) records in a buf. */
struct key_list {
    struct buf *keys;       /* packed records */
    size_t n;               /* keys collected */
    size_t limit;           /* stop after this many (0 = no limit) */
    const uint8_t *pattern; /* glob filter or NULL */
    size_t pattern_len;     /* bytes */
    size_t examined;        /* keys looked at (for SCAN COUNT) */
    struct buf *last;       /* last key examined, when non-NULL */
};

static int collect_key(void *arg, const struct store_rec *rec)
{
    struct key_list *kl = arg;
    kl->examined++;
    if (kl->last) {
        buf_reset(kl->last);
        buf_append(kl->last, rec->key, rec->key_len);
    }
    if (!kl->pattern || glob_match(kl->pattern, kl->pattern_len, rec->key, rec->key_len, false)) {
        buf_append(kl->keys, &rec->key_len, sizeof(rec->key_len));
        buf_append(kl->keys, rec->key, rec->key_len);
        kl->n++;
    }
    return (kl->limit && kl->examined >= kl->limit) ? 1 : 0;
}

/* Iterates a packed key list: returns the next key at *pos, advancing it. */
static struct slice next_key(const struct buf *keys, size_t *pos)
{
    size_t len;
    memcpy(&len, keys->data + *pos, sizeof(len));
    struct slice s = { keys->data + *pos + sizeof(len), len };
    *pos += sizeof(len) + len;
    return s;
}

/* Length of the literal prefix of a glob pattern (before any special character). */
static size_t glob_literal_prefix(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len && p[i] != '*' && p[i] != '?' && p[i] != '[' && p[i] != '\\')
        i++;
    return i;
}

void cmd_flushdb(struct cmd_ctx *x)
{
    if (x->resp) {
        for (size_t i = 1; i < x->argc; i++) {
            if (!slice_is(&x->argv[i], "ASYNC") && !slice_is(&x->argv[i], "SYNC")) {
                reply_error(x, "syntax error");
                return;
            }
        }
    }
    /* replication.md §1: tombstones for every live key, all at one ts. */
    struct buf *keys = &state(x)->tmp;
    buf_reset(keys);
    struct key_list kl = { .keys = keys };
    int rc = store_scan(x->srv->store, NULL, 0, NULL, 0, STORE_SCAN_LIVE | STORE_SCAN_KEYS_ONLY,
                        collect_key, &kl);
    if (rc < 0) {
        reply_storage_error(x);
        return;
    }
    uint64_t ts = hlc_now(&x->srv->hlc, hlc_wall_ns());
    for (size_t pos = 0, i = 0; i < kl.n; i++) {
        struct slice k = next_key(keys, &pos);
        if (kv_write(&x->srv->kv, CODEC_OP_DEL, k.p, k.len, NULL, 0, ts) < 0) {
            reply_storage_error(x);
            return;
        }
    }
    reply_ok(x);
}

void cmd_keys(struct cmd_ctx *x)
{
    const struct slice *pat = &x->argv[1];
    struct buf *keys = &state(x)->tmp;
    buf_reset(keys);
    struct key_list kl = { .keys = keys, .pattern = pat->p, .pattern_len = pat->len };
    size_t plen = glob_literal_prefix(pat->p, pat->len);
    if (plen == pat->len) { /* no wildcard: only the key itself can match */
        const uint8_t *v;
        size_t n;
        int rc = store_get(x->srv->store, pat->p, pat->len, &v, &n);
        if (rc < 0) {
            reply_storage_error(x);
            return;
        }
        resp_add_array_len(x->out, rc ? 1 : 0);
        if (rc) resp_add_bulk(x->out, pat->p, pat->len);
        return;
    }
    int rc = store_scan(x->srv->store, pat->p, plen, NULL, 0,
                        STORE_SCAN_LIVE | STORE_SCAN_KEYS_ONLY, collect_key, &kl);
    if (rc < 0) {
        reply_storage_error(x);
        return;
    }
    resp_add_array_len(x->out, kl.n);
    for (size_t pos = 0, i = 0; i < kl.n; i++) {
        struct slice k = next_key(keys, &pos);
        resp_add_bulk(x->out, k.p, k.len);
    }
}

static void scan_line(struct cmd_ctx *x)
{
    /* protocol.md §3: SCAN [prefix] -> "KEYS <n>" then n keys, ascending byte order. */
    const uint8_t *prefix = x->argc > 1 ? x->argv[1].p : NULL;
    size_t plen = x->argc > 1 ? x->argv[1].len : 0;
    struct buf *keys = &state(x)->tmp;
    buf_reset(keys);
    struct key_list kl = { .keys = keys };
    int rc = store_scan(x->srv->store, prefix, plen, NULL, 0,
                        STORE_SCAN_LIVE | STORE_SCAN_KEYS_ONLY, collect_key, &kl);
    if (rc < 0) {
        reply_storage_error(x);
        return;
    }
    buf_reserve(x->out, keys->len + 32);
    buf_append_str(x->out, "KEYS ");
    buf_append_u64(x->out, kl.n);
    buf_append(x->out, "\r\n", 2);
    for (size_t pos = 0, i = 0; i < kl.n; i++) {
        struct slice k = next_key(keys, &pos);
        buf_append(x->out, k.p, k.len);
        buf_append(x->out, "\r\n", 2);
    }
}

/*
 * RESP SCAN cursors: the table is ordered by key, so a cursor is "continue after key K". Clients
 * need an integer, so the server keeps the last key of each open cursor in a ring of
 * CMD_SCAN_CURSORS slots and hands out the slot's sequence number. A cursor older than the ring
 * (the client paused while 1,024 other scans started) is answered with "ERR invalid cursor".
 */
static struct scan_cursor *cursor_ring(struct cmd_state *st)
{
    if (!st->cursors) {
        st->cursors = xcalloc(CMD_SCAN_CURSORS, sizeof(*st->cursors));
        for (size_t i = 0; i < CMD_SCAN_CURSORS; i++)
            buf_init(&st->cursors[i].last);
    }
    return st->cursors;
}

void scan_cursors_free(struct cmd_state *st)
{
    if (!st->cursors) return;
    for (size_t i = 0; i < CMD_SCAN_CURSORS; i++)
        buf_clear(&st->cursors[i].last);
    free(st->cursors);
    st->cursors = NULL;
}

static void scan_resp(struct cmd_ctx *x)
{
    struct cmd_state *st = state(x);
    struct scan_cursor *ring = cursor_ring(st);
    int64_t cursor, count = SCAN_DEFAULT_COUNT;
    const struct slice *match = NULL;
    if (!parse_i64(x->argv[1].p, x->argv[1].len, &cursor) || cursor < 0) {
        reply_error(x, "invalid cursor");
        return;
    }
    for (size_t i = 2; i < x->argc; i++) {
        bool has_arg = i + 1 < x->argc;
        if (slice_is(&x->argv[i], "MATCH") && has_arg) {
            match = &x->argv[++i];
        } else if (slice_is(&x->argv[i], "COUNT") && has_arg) {
            if (!parse_i64(x->argv[i + 1].p, x->argv[i + 1].len, &count)) {
                reply_error(x, "value is not an integer or out of range");
                return;
            }
            if (count < 1) {
                reply_error(x, "syntax error");
                return;
            }
            i++;
        } else if (slice_is(&x->argv[i], "TYPE") && has_arg) {
            i++; /* every key is a string */
        } else {
            reply_error(x, "syntax error");
            return;
        }
    }
    if (count > SCAN_MAX_COUNT) count = SCAN_MAX_COUNT;
    struct buf *after = NULL;
    if (cursor != 0) {
        struct scan_cursor *sc = &ring[(uint64_t) cursor % CMD_SCAN_CURSORS];
        if (sc->id != (uint64_t) cursor) {
            reply_error(x, "invalid cursor");
            return;
        }
        after = &sc->last;
    }
    const uint8_t *prefix = NULL;
    size_t plen = 0;
    if (match) {
        prefix = match->p;
        plen = glob_literal_prefix(match->p, match->len);
    }
    struct buf *keys = &st->tmp, *last = &st->tmp2;
    buf_reset(keys);
    buf_reset(last);
    struct key_list kl = { .keys = keys,
                           .limit = (size_t) count,
                           .last = last,
                           .pattern = match ? match->p : NULL,
                           .pattern_len = match ? match->len : 0 };
    int rc = store_scan(x->srv->store, prefix, plen, after ? after->data : NULL,
                        after ? after->len : 0, STORE_SCAN_LIVE | STORE_SCAN_KEYS_ONLY, collect_key,
                        &kl);
    if (rc < 0) {
        reply_storage_error(x);
        return;
    }
    uint64_t next = 0;
    if (rc > 0) { /* stopped at COUNT: more may follow */
        next = ++st->cursor_seq;
        struct scan_cursor *sc = &ring[next % CMD_SCAN_CURSORS];
        sc->id = next;
        buf_reset(&sc->last);
        buf_append(&sc->last, last->data, last->len);
    }
    if (cursor != 0) ring[(uint64_t) cursor % CMD_SCAN_CURSORS].id = 0; /* single use */
    resp_add_array_len(x->out, 2);
    char num[24];
    int nlen = snprintf(num, sizeof(num), "%llu", (unsigned long long) next);
    resp_add_bulk(x->out, num, (size_t) nlen);
    resp_add_array_len(x->out, kl.n);
    for (size_t pos = 0, i = 0; i < kl.n; i++) {
        struct slice k = next_key(keys, &pos);
        resp_add_bulk(x->out, k.p, k.len);
    }
}

void cmd_scan(struct cmd_ctx *x)
{
    if (x->resp) {
        if (x->argc < 2) {
            reply_error(x, "wrong number of arguments for 'scan' command");
            return;
        }
        scan_resp(x);
    } else {
        scan_line(x);
    }
}

/*
 * HASH [prefix]: a digest of the live data (protocol.md §3, replication.md §4): BLAKE2b-256 over
 * (len64le(key) key len64le(value) value) of each live record with the prefix, in key order.
 * It depends only on live keys and values, so two nodes holding the same data agree whatever
 * their tombstones or timestamps; the empty selection is 64 zeros.
 */
void cmd_hash(struct cmd_ctx *x)
{
    if (x->argc > 2) {
        reply_error(x, "HASH command accepts only one argument");
        return;
    }
    bool all = x->argc == 1 || (x->argv[1].len == 1 && x->argv[1].p[0] == '*');
    uint8_t digest[KV_DIGEST_LEN];
    char hex[HASH_HEX_LEN + 1];
    if (kv_live_digest(x->srv->store, all ? NULL : x->argv[1].p, all ? 0 : x->argv[1].len, digest) <
        0) {
        reply_storage_error(x);
        return;
    }
    (void) sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
    if (x->resp) {
        resp_add_bulk(x->out, hex, HASH_HEX_LEN);
    } else if (x->argc == 1) {
        reply_text_named(x, "HASH", hex);
    } else {
        buf_append_str(x->out, "HASH ");
        buf_append(x->out, x->argv[1].p, x->argv[1].len);
        buf_append(x->out, " ", 1);
        buf_append(x->out, hex, HASH_HEX_LEN);
        buf_append(x->out, "\r\n", 2);
    }
}
