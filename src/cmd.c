/* SPDX-License-Identifier: MIT */
/*
 * cmd: the command table, dispatch, reply encoding and MULTI/EXEC; see include/arborkv/cmd.h.
 *
 * One table serves both protocols. Each entry says which protocol reaches it: the line protocol's
 * grammar (line.c) has already validated and canonicalized its argv, so line requests are only
 * looked up; RESP requests get the central arity check here, with Redis's error strings.
 * Lookup is a binary search over the sorted table (checked once at start).
 *
 * MULTI/EXEC: queued commands are copied (argv borrows from the input buffer, which moves) and
 * run back to back at EXEC; the loop is single-threaded, so nothing interleaves, and they share
 * the turn's transaction, so they commit together.
 */
#include "arborkv/cmd.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arborkv/buf.h"
#include "arborkv/client.h"
#include "arborkv/log.h"
#include "arborkv/mem.h"
#include "arborkv/resp.h"
#include "arborkv/server.h"
#include "cmd_int.h"

#define MULTI_MAX_QUEUED 100000 /* commands queued in one MULTI before it is refused */

#define L  CMD_LINE
#define R  CMD_RESP
#define LR (CMD_LINE | CMD_RESP)

/* Sorted by name: cmd_init checks it. */
static const struct cmd_def cmd_table[] = {
    { "APPEND", 3, LR, STAT_STRING, cmd_append },
    { "ARBORKV.AE", 2, R, STAT_NONE, cmd_arborkv_ae },
    { "AUTH", -2, R, STAT_NONE, cmd_auth },
    { "CLIENT", -2, LR, STAT_CLIENTLIST, cmd_client },
    { "COMMAND", -1, R, STAT_MANAGEMENT, cmd_command },
    { "CONFIG", -2, R, STAT_MANAGEMENT, cmd_config },
    { "DBSIZE", 1, LR, STAT_DBSIZE, cmd_dbsize },
    { "DECR", 2, R, STAT_NUMERIC, cmd_incrby },
    { "DECRBY", 3, LR, STAT_NUMERIC, cmd_incrby },
    { "DEL", -2, LR, STAT_DELETE, cmd_del },
    { "DISCARD", 1, R | CMD_TXN, STAT_NONE, cmd_discard },
    { "ECHO", 2, LR, STAT_ECHO, cmd_echo },
    { "EXEC", 1, R | CMD_TXN, STAT_NONE, cmd_exec },
    { "EXISTS", -2, LR, STAT_EXISTS, cmd_exists },
    { "FLUSHALL", -1, R, STAT_FLUSHDB, cmd_flushdb },
    { "FLUSHDB", -1, LR, STAT_FLUSHDB, cmd_flushdb },
    { "GET", 2, LR, STAT_GET, cmd_get },
    { "GETDEL", 2, R, STAT_DELETE, cmd_getdel },
    { "GETSET", 3, R, STAT_SET, cmd_getset },
    { "HASH", -1, LR, STAT_HASH, cmd_hash },
    { "HELLO", -1, R, STAT_NONE, cmd_hello },
    { "INCR", 2, R, STAT_NUMERIC, cmd_incrby },
    { "INCRBY", 3, LR, STAT_NUMERIC, cmd_incrby },
    { "INFO", -1, LR, STAT_STAT, cmd_info },
    { "KEYS", 2, R, STAT_SCAN, cmd_keys },
    { "MEMORY", -1, L, STAT_MEMORY, cmd_memory },
    { "MGET", -2, LR, STAT_BULK, cmd_mget },
    { "MSET", -3, LR, STAT_BULK, cmd_mset },
    { "MULTI", 1, R | CMD_TXN, STAT_NONE, cmd_multi },
    { "PERSIST", 2, R, STAT_NONE, cmd_ttl },
    { "PING", -1, LR, STAT_PING, cmd_ping },
    { "PREPEND", 3, LR, STAT_STRING, cmd_append },
    { "PTTL", 2, R, STAT_NONE, cmd_ttl },
    { "QUIT", -1, LR | CMD_TXN, STAT_NONE, cmd_quit },
    { "REPLICATE", 2, LR, STAT_REPLICATE, cmd_replicate },
    { "SCAN", -1, LR, STAT_SCAN, cmd_scan },
    { "SELECT", 2, R, STAT_NONE, cmd_select },
    { "SET", -3, LR, STAT_SET, cmd_set },
    { "SETNX", 3, R, STAT_SET, cmd_setnx },
    { "SHUTDOWN", -1, LR, STAT_MANAGEMENT, cmd_shutdown },
    { "STATS", 1, LR, STAT_STAT, cmd_stats },
    { "STRLEN", 2, R, STAT_GET, cmd_strlen },
    { "SYNC", -3, LR, STAT_SYNC, cmd_sync },
    { "TRUNCATE", -1, L, STAT_BULK, cmd_flushdb },
    { "TTL", 2, R, STAT_NONE, cmd_ttl },
    { "TYPE", 2, R, STAT_NONE, cmd_type },
    { "UNLINK", -2, R, STAT_DELETE, cmd_del },
    { "UNWATCH", 1, R | CMD_TXN, STAT_NONE, cmd_watch },
    { "VERSION", 1, LR, STAT_MANAGEMENT, cmd_version },
    { "WATCH", -2, R | CMD_TXN, STAT_NONE, cmd_watch },
};
static const size_t cmd_table_len = sizeof(cmd_table) / sizeof(cmd_table[0]);

#undef L
#undef R
#undef LR

/* A queued MULTI command: its arguments copied into one buffer. */
struct queued {
    struct buf bytes;          /* all arguments back to back */
    size_t *lens;              /* argc lengths */
    size_t argc;               /* arguments */
    const struct cmd_def *def; /* resolved at queue time */
};

struct multi_state {
    struct queued *cmds; /* n queued commands */
    size_t n, cap;       /* entries used / allocated */
    bool dirty;          /* an error while queueing: EXEC aborts */
};

static const struct cmd_def *lookup(const struct slice *name)
{
    size_t lo = 0, hi = cmd_table_len;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = slice_cmp_upper(name, cmd_table[mid].name);
        if (c == 0) return &cmd_table[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- dispatch ---- */

static void reply_unknown(struct cmd_ctx *x)
{
    struct cmd_state *st = x->srv->cmd_state;
    struct buf *m = &st->tmp2;
    buf_reset(m);
    /* Redis's wording, so client libraries recognize it; each argument shown up to 128 bytes. */
    buf_append_str(m, "ERR unknown command '");
    buf_append(m, x->argv[0].p, x->argv[0].len < 128 ? x->argv[0].len : 128);
    buf_append_str(m, "', with args beginning with: ");
    for (size_t i = 1; i < x->argc && m->len < 256; i++) {
        buf_append(m, "'", 1);
        buf_append(m, x->argv[i].p, x->argv[i].len < 128 ? x->argv[i].len : 128);
        buf_append(m, "' ", 2);
    }
    resp_add_error(x->out, (const char *) m->data, m->len);
}

/* d's name in lower case, as Redis spells command names in replies (truncated to n - 1). */
static void lower_name(const struct cmd_def *d, char *out, size_t n)
{
    size_t i = 0;
    for (; d->name[i] && i < n - 1; i++)
        out[i] = (char) (d->name[i] >= 'A' && d->name[i] <= 'Z' ? d->name[i] + 32 : d->name[i]);
    out[i] = '\0';
}

static void reply_arity(struct cmd_ctx *x, const struct cmd_def *d)
{
    char lower[32];
    lower_name(d, lower, sizeof(lower));
    reply_error(x, "wrong number of arguments for '%s' command", lower);
}

static void queue_command(struct cmd_ctx *x, const struct cmd_def *d)
{
    struct multi_state *m = x->c->multi;
    if (m->n >= MULTI_MAX_QUEUED) {
        m->dirty = true;
        reply_error(x, "too many commands queued in MULTI (limit %d)", MULTI_MAX_QUEUED);
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->cmds = xrealloc(m->cmds, m->cap * sizeof(*m->cmds));
    }
    struct queued *q = &m->cmds[m->n++];
    buf_init(&q->bytes);
    q->lens = xmalloc(x->argc * sizeof(*q->lens));
    q->argc = x->argc;
    q->def = d;
    for (size_t i = 0; i < x->argc; i++) {
        buf_append(&q->bytes, x->argv[i].p, x->argv[i].len);
        q->lens[i] = x->argv[i].len;
    }
    reply_status(x, "QUEUED");
}

static void multi_free(struct multi_state *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) {
        buf_clear(&m->cmds[i].bytes);
        free(m->cmds[i].lens);
    }
    free(m->cmds);
    free(m);
}

void cmd_dispatch(struct client *c, struct server *srv, const struct slice *argv, size_t argc)
{
    assert(c && srv && argv && argc >= 1);
    struct cmd_ctx x = {
        .srv = srv, .c = c, .argv = argv, .argc = argc, .out = &c->out, .resp = client_resp(c)
    };
    /* protocol.md §4: every parsed command counts before it runs. */
    srv->stats.total_commands++;
    const struct cmd_def *d = lookup(&argv[0]);
    if (d && !(d->flags & (x.resp ? CMD_RESP : CMD_LINE))) d = NULL;
    if (!d) {
        if (c->multi) c->multi->dirty = true;
        if (x.resp)
            reply_unknown(&x);
        else
            reply_error(&x, "Unknown command: %.*s", (int) argv[0].len, (const char *) argv[0].p);
        return;
    }
    if (x.resp && ((d->arity > 0 && argc != (size_t) d->arity) ||
                   (d->arity < 0 && argc < (size_t) -d->arity))) {
        if (c->multi) c->multi->dirty = true;
        reply_arity(&x, d);
        return;
    }
    srv->stats.by_cat[d->cat]++;
    if (c->multi && !(d->flags & CMD_TXN)) {
        queue_command(&x, d);
        return;
    }
    d->fn(&x);
}

void cmd_multi(struct cmd_ctx *x)
{
    if (x->c->multi) {
        reply_error(x, "MULTI calls can not be nested");
        return;
    }
    x->c->multi = xcalloc(1, sizeof(*x->c->multi));
    reply_ok(x);
}

void cmd_discard(struct cmd_ctx *x)
{
    if (!x->c->multi) {
        reply_error(x, "DISCARD without MULTI");
        return;
    }
    multi_free(x->c->multi);
    x->c->multi = NULL;
    reply_ok(x);
}

void cmd_exec(struct cmd_ctx *x)
{
    struct multi_state *m = x->c->multi;
    if (!m) {
        reply_error(x, "EXEC without MULTI");
        return;
    }
    x->c->multi = NULL;
    if (m->dirty) {
        reply_error_raw(x, "EXECABORT Transaction discarded because of previous errors.");
        multi_free(m);
        return;
    }
    resp_add_array_len(x->out, m->n);
    struct slice *argv = NULL;
    size_t argv_cap = 0;
    for (size_t i = 0; i < m->n; i++) {
        struct queued *q = &m->cmds[i];
        if (q->argc > argv_cap) {
            argv_cap = q->argc;
            argv = xrealloc(argv, argv_cap * sizeof(*argv));
        }
        size_t off = 0;
        for (size_t j = 0; j < q->argc; j++) {
            argv[j] = (struct slice){ q->bytes.data + off, q->lens[j] };
            off += q->lens[j];
        }
        struct cmd_ctx y = *x;
        y.in_exec = true;
        y.argv = argv;
        y.argc = q->argc;
        q->def->fn(&y);
    }
    free(argv);
    multi_free(m);
}

void cmd_watch(struct cmd_ctx *x)
{
    /* WATCH needs per-key modification tracking across clients and replication; not offered.
     * UNWATCH is a harmless no-op so clients that always send it keep working. */
    if (slice_is(&x->argv[0], "UNWATCH"))
        reply_ok(x);
    else
        reply_error(x, "WATCH is not supported by arborkv");
}

/* ---- COMMAND: the table itself, for clients such as redis-cli ---- */

static void command_entry(struct cmd_ctx *x, const struct cmd_def *d)
{
    char lower[32];
    lower_name(d, lower, sizeof(lower));
    resp_add_array_len(x->out, 6);
    resp_add_bulk_str(x->out, lower);
    resp_add_int(x->out, d->arity);
    resp_add_array_len(x->out, 0);
    resp_add_int(x->out, 0);
    resp_add_int(x->out, 0);
    resp_add_int(x->out, 0);
}

void cmd_command(struct cmd_ctx *x)
{
    size_t n = 0;
    for (size_t i = 0; i < cmd_table_len; i++)
        n += (cmd_table[i].flags & CMD_RESP) != 0;
    if (x->argc == 1) {
        resp_add_array_len(x->out, n);
        for (size_t i = 0; i < cmd_table_len; i++)
            if (cmd_table[i].flags & CMD_RESP) command_entry(x, &cmd_table[i]);
    } else if (slice_is(&x->argv[1], "COUNT")) {
        resp_add_int(x->out, (int64_t) n);
    } else if (slice_is(&x->argv[1], "DOCS")) {
        resp_add_array_len(x->out, 0); /* redis-cli falls back to its built-in help */
    } else if (slice_is(&x->argv[1], "INFO")) {
        resp_add_array_len(x->out, x->argc - 2);
        for (size_t j = 2; j < x->argc; j++) {
            const struct cmd_def *d = NULL;
            for (size_t i = 0; i < cmd_table_len && !d; i++)
                if ((cmd_table[i].flags & CMD_RESP) && slice_is(&x->argv[j], cmd_table[i].name))
                    d = &cmd_table[i];
            if (d)
                command_entry(x, d);
            else
                resp_add_null_array(x->out);
        }
    } else {
        reply_error(x, "unknown subcommand '%.*s'. Try COMMAND HELP.",
                    (int) (x->argv[1].len < 64 ? x->argv[1].len : 64), (const char *) x->argv[1].p);
    }
}

void cmd_client_clear(struct client *c)
{
    multi_free(c->multi);
    c->multi = NULL;
    free(c->name);
    c->name = NULL;
}

void cmd_init(struct server *srv)
{
    for (size_t i = 1; i < cmd_table_len; i++) {
        if (strcmp(cmd_table[i - 1].name, cmd_table[i].name) >= 0) {
            log_error("cmd: command table not sorted at %s", cmd_table[i].name);
            abort();
        }
    }
    struct cmd_state *st = xcalloc(1, sizeof(*st));
    buf_init(&st->tmp);
    buf_init(&st->tmp2);
    srv->cmd_state = st;
}

void cmd_free(struct server *srv)
{
    struct cmd_state *st = srv->cmd_state;
    if (!st) return;
    buf_clear(&st->tmp);
    buf_clear(&st->tmp2);
    scan_cursors_free(st);
    free(st);
    srv->cmd_state = NULL;
}
