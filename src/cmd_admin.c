/* SPDX-License-Identifier: MIT */
/*
 * cmd_admin: server commands: PING/ECHO, STATS/INFO/MEMORY/VERSION, CLIENT, SHUTDOWN/QUIT,
 * REPLICATE/SYNC/ARBORKV.AE, and the RESP commands that Redis tools send on their own (COMMAND,
 * CONFIG GET, SELECT, HELLO, AUTH). Formats follow protocol.md §3-§5; INFO over RESP uses Redis's
 * section layout so Redis tools and libraries can parse it.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"

#include "arborkv/ae.h"
#include "arborkv/buf.h"
#include "arborkv/client.h"
#include "arborkv/glob.h"
#include "arborkv/hlc.h"
#include "arborkv/line.h"
#include "arborkv/loop.h"
#include "arborkv/mem.h"
#include "arborkv/merkle.h"
#include "arborkv/mirror.h"
#include "arborkv/purge.h"
#include "arborkv/repl.h"
#include "arborkv/reply.h"
#include "arborkv/resp.h"
#include "arborkv/server.h"
#include "arborkv/store.h"
#include "arborkv/turn.h"
#include "cmd_int.h"

#define CLIENT_NAME_MAX 256 /* bytes in a CLIENT SETNAME name */

/* Names of the STATS families, in enum stat_cat order (protocol.md §4). */
static const char *const stat_names[STAT_NCATS] = {
    "get_commands",     "scan_commands",      "ping_commands",       "echo_commands",
    "flushdb_commands", "memory_commands",    "clientlist_commands", "exists_commands",
    "dbsize_commands",  "set_commands",       "delete_commands",     "numeric_commands",
    "string_commands",  "bulk_commands",      "stat_commands",       "sync_commands",
    "hash_commands",    "replicate_commands", "management_commands", NULL,
};

static struct buf *scratch(struct cmd_ctx *x)
{
    struct cmd_state *st = x->srv->cmd_state;
    buf_reset(&st->tmp);
    return &st->tmp;
}

/* Bytes of heap in use: our buffers, SQLite's page cache and everything else malloc'd. */
static uint64_t memory_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    uint64_t used = (uint64_t) mi.uordblks + (uint64_t) mi.hblkhd;
    if (used == 0) { /* allocator without mallinfo (e.g. a sanitizer build): resident set */
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long size = 0, rss = 0;
        if (f) {
            if (fscanf(f, "%lu %lu", &size, &rss) != 2) rss = 0;
            (void) fclose(f);
        }
        used = (uint64_t) rss * (uint64_t) sysconf(_SC_PAGESIZE);
    }
    return used;
}

static uint64_t uptime_s(const struct server *srv)
{
    return (loop_now_us() - srv->start_us) / 1000000;
}

static void append_uptime(struct buf *b, uint64_t s)
{
    buf_printf(b, "%llud %lluh %llum %llus", (unsigned long long) (s / 86400),
               (unsigned long long) (s / 3600 % 24), (unsigned long long) (s / 60 % 60),
               (unsigned long long) (s % 60));
}

void cmd_ping(struct cmd_ctx *x)
{
    if (x->resp) {
        if (x->argc > 2)
            reply_error(x, "wrong number of arguments for 'ping' command");
        else if (x->argc == 2)
            resp_add_bulk(x->out, x->argv[1].p, x->argv[1].len);
        else
            resp_add_simple(x->out, "PONG");
        return;
    }
    /* protocol.md §3: bare PING -> PONG, PING hi -> PONG hi. */
    buf_append_str(x->out, "PONG");
    if (x->argc > 1) {
        buf_append(x->out, " ", 1);
        buf_append(x->out, x->argv[1].p, x->argv[1].len);
    }
    buf_append(x->out, "\r\n", 2);
}

void cmd_echo(struct cmd_ctx *x)
{
    if (x->resp) {
        resp_add_bulk(x->out, x->argv[1].p, x->argv[1].len);
        return;
    }
    buf_append_str(x->out, "ECHO ");
    buf_append(x->out, x->argv[1].p, x->argv[1].len);
    buf_append(x->out, "\r\n", 2);
}

void cmd_memory(struct cmd_ctx *x)
{
    reply_int_named(x, "MEMORY", (int64_t) memory_used());
}

void cmd_version(struct cmd_ctx *x)
{
    reply_text_named(x, "VERSION", ARBORKV_VERSION);
}

void cmd_stats(struct cmd_ctx *x)
{
    struct server *srv = x->srv;
    struct buf *b = scratch(x);
    uint64_t up = uptime_s(srv);
    buf_printf(b, "uptime_seconds:%llu\r\nuptime:", (unsigned long long) up);
    append_uptime(b, up);
    buf_printf(b, "\r\ntotal_connections:%llu\r\nactive_connections:%zu\r\ntotal_commands:%llu\r\n",
               (unsigned long long) srv->stats.total_connections, srv->nclients,
               (unsigned long long) srv->stats.total_commands);
    for (int i = 0; i < STAT_NONE; i++)
        buf_printf(b, "%s:%llu\r\n", stat_names[i], (unsigned long long) srv->stats.by_cat[i]);
    buf_printf(b, "used_memory_kb:%llu\r\n", (unsigned long long) (memory_used() / 1024));
    struct turn_stats ts;
    turn_get_stats(srv->turn, &ts);
    buf_printf(b,
               "rejected_connections:%llu\r\ncommits:%llu\r\ncommit_failures:%llu\r\n"
               "output_limit_disconnects:%llu\r\nprotocol_errors:%llu\r\n",
               (unsigned long long) srv->stats.rejected_connections,
               (unsigned long long) ts.commits, (unsigned long long) ts.failures,
               (unsigned long long) srv->stats.output_limit_disconnects,
               (unsigned long long) srv->stats.protocol_errors);
    reply_lines(x, "STATS", b);
}

/* The arborkv-specific INFO lines shared by both protocols. */
static void info_node(struct server *srv, struct buf *b)
{
    buf_printf(b,
               "node_id:%s\r\nstorage_engine:%s\r\nfsync:%s\r\ntcp_port:%d\r\n"
               "connected_clients:%zu\r\n",
               srv->node_id, srv->engine_name, srv->fsync_name, srv->port, srv->nclients);
    repl_info(srv->repl, b);
    if (srv->tree) {
        uint8_t root[MERKLE_DIGEST_LEN];
        char hex[2 * MERKLE_DIGEST_LEN + 1];
        merkle_root(srv->tree, root);
        (void) sodium_bin2hex(hex, sizeof(hex), root, sizeof(root));
        buf_printf(b, "merkle_root:%s\r\nmerkle_records:%llu\r\nmerkle_memory_bytes:%zu\r\n", hex,
                   (unsigned long long) merkle_count(srv->tree), merkle_memory(srv->tree));
    }
    ae_info(srv->ae, b);
    purge_info(srv->purge, b);
    mirror_info(srv->mirror, b);
    hlc_info(&srv->hlc, b);
}

static bool want_section(const struct cmd_ctx *x, const char *name)
{
    if (x->argc < 2) return true;
    for (size_t i = 1; i < x->argc; i++) {
        if (slice_is(&x->argv[i], "ALL") || slice_is(&x->argv[i], "EVERYTHING") ||
            slice_is(&x->argv[i], "DEFAULT") || slice_is(&x->argv[i], name))
            return true;
    }
    return false;
}

void cmd_info(struct cmd_ctx *x)
{
    struct server *srv = x->srv;
    struct buf *b = scratch(x);
    uint64_t up = uptime_s(srv);
    if (!x->resp) {
        /* protocol.md §4: version, uptime_seconds, uptime, server_time_unix, db_keys, then ours. */
        buf_printf(b, "version:%s\r\nuptime_seconds:%llu\r\nuptime:", ARBORKV_VERSION,
                   (unsigned long long) up);
        append_uptime(b, up);
        buf_printf(b, "\r\nserver_time_unix:%lld\r\ndb_keys:%llu\r\n", (long long) time(NULL),
                   (unsigned long long) store_live_count(srv->store));
        info_node(srv, b);
        reply_lines(x, "INFO", b);
        return;
    }
    /* Redis layout: "# Section" headers, key:value lines, a blank line between sections. */
    if (want_section(x, "SERVER"))
        buf_printf(b,
                   "# Server\r\nredis_version:7.0.0\r\narborkv_version:%s\r\n"
                   "redis_mode:standalone\r\nos:Linux\r\nprocess_id:%ld\r\ntcp_port:%d\r\n"
                   "uptime_in_seconds:%llu\r\nuptime_in_days:%llu\r\n\r\n",
                   ARBORKV_VERSION, (long) getpid(), srv->port, (unsigned long long) up,
                   (unsigned long long) (up / 86400));
    if (want_section(x, "CLIENTS"))
        buf_printf(b, "# Clients\r\nconnected_clients:%zu\r\nmaxclients:%zu\r\n\r\n", srv->nclients,
                   srv->max_clients);
    if (want_section(x, "MEMORY"))
        buf_printf(b, "# Memory\r\nused_memory:%llu\r\n\r\n", (unsigned long long) memory_used());
    if (want_section(x, "PERSISTENCE")) {
        struct turn_stats ts;
        turn_get_stats(srv->turn, &ts);
        buf_printf(b,
                   "# Persistence\r\nloading:0\r\naof_enabled:0\r\nstorage_engine:%s\r\n"
                   "fsync:%s\r\ncommits:%llu\r\ncommit_failures:%llu\r\n\r\n",
                   srv->engine_name, srv->fsync_name, (unsigned long long) ts.commits,
                   (unsigned long long) ts.failures);
    }
    if (want_section(x, "STATS"))
        buf_printf(b,
                   "# Stats\r\ntotal_connections_received:%llu\r\n"
                   "total_commands_processed:%llu\r\nrejected_connections:%llu\r\n\r\n",
                   (unsigned long long) srv->stats.total_connections,
                   (unsigned long long) srv->stats.total_commands,
                   (unsigned long long) srv->stats.rejected_connections);
    if (want_section(x, "REPLICATION"))
        buf_printf(b, "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    if (want_section(x, "ARBORKV")) {
        buf_append_str(b, "# Arborkv\r\n");
        info_node(srv, b);
        buf_append_str(b, "\r\n");
    }
    if (want_section(x, "KEYSPACE")) {
        buf_append_str(b, "# Keyspace\r\n");
        uint64_t n = store_live_count(srv->store);
        if (n) buf_printf(b, "db0:keys=%llu,expires=0,avg_ttl=0\r\n", (unsigned long long) n);
    }
    resp_add_bulk(x->out, b->data, b->len);
}

static void client_line(struct buf *b, const struct client *c, uint64_t now_us, bool resp)
{
    buf_printf(b, "id=%llu addr=%s age=%llu idle=%llu", (unsigned long long) c->id, c->addr,
               (unsigned long long) ((now_us - c->created_us) / 1000000),
               (unsigned long long) ((now_us - c->last_cmd_us) / 1000000));
    if (resp) {
        buf_printf(b, " fd=%d name=%s db=0 proto=%s", c->fd, c->name ? c->name : "",
                   client_resp(c) ? "resp" : "line");
        buf_append(b, "\n", 1);
    } else {
        buf_append(b, "\r\n", 2);
    }
}

void cmd_client(struct cmd_ctx *x)
{
    uint64_t now = loop_now_us();
    const struct slice *sub = x->argc > 1 ? &x->argv[1] : NULL;
    if (!sub || slice_is(sub, "LIST")) {
        struct buf *b = scratch(x);
        for (const struct client *c = x->srv->clients; c; c = c->next)
            client_line(b, c, now, x->resp);
        if (x->resp) {
            resp_add_bulk(x->out, b->data, b->len);
        } else {
            /* protocol.md §3: "CLIENT LIST", one line per connected client, then "END". */
            buf_append_str(x->out, "CLIENT LIST\r\n");
            buf_append(x->out, b->data, b->len);
            buf_append_str(x->out, "END\r\n");
        }
        return;
    }
    if (!x->resp) {
        reply_error(x, "Unknown CLIENT subcommand");
        return;
    }
    if (slice_is(sub, "ID") && x->argc == 2) {
        resp_add_int(x->out, (int64_t) x->c->id);
    } else if (slice_is(sub, "GETNAME") && x->argc == 2) {
        if (x->c->name)
            resp_add_bulk_str(x->out, x->c->name);
        else
            resp_add_null(x->out);
    } else if (slice_is(sub, "SETNAME") && x->argc == 3) {
        const struct slice *n = &x->argv[2];
        for (size_t i = 0; i < n->len; i++) {
            if (n->p[i] <= ' ' || n->p[i] > '~' || n->len > CLIENT_NAME_MAX) {
                reply_error(x, "Client names cannot contain spaces, newlines or special "
                               "characters.");
                return;
            }
        }
        free(x->c->name);
        x->c->name = n->len ? xstrndup((const char *) n->p, n->len) : NULL;
        reply_ok(x);
    } else if (slice_is(sub, "INFO") && x->argc == 2) {
        struct buf *b = scratch(x);
        client_line(b, x->c, now, true);
        resp_add_bulk(x->out, b->data, b->len);
    } else if ((slice_is(sub, "SETINFO") && x->argc == 4) ||
               ((slice_is(sub, "NO-EVICT") || slice_is(sub, "NO-TOUCH")) && x->argc == 3)) {
        reply_ok(x); /* client-library metadata and hints: accepted, nothing to do */
    } else {
        reply_error(x,
                    "unknown subcommand or wrong number of arguments for '%.*s'. Try CLIENT "
                    "HELP.",
                    (int) (sub->len < 64 ? sub->len : 64), (const char *) sub->p);
    }
}

void cmd_replicate(struct cmd_ctx *x)
{
    const struct slice *a = &x->argv[1];
    struct repl *r = x->srv->repl;
    if (slice_is(a, "STATUS")) {
        char st[96];
        const char *link = repl_link_state(r);
        /* The spec's text while events flow; otherwise the link's state follows it. */
        if (repl_is_enabled(r) && !strcmp(link, "connected"))
            (void) snprintf(st, sizeof(st), "REPLICATION enabled %zu nodes", repl_peers_online(r));
        else if (repl_is_enabled(r))
            (void) snprintf(st, sizeof(st), "REPLICATION enabled %zu nodes, broker %s",
                            repl_peers_online(r), link);
        else
            (void) snprintf(st, sizeof(st), "REPLICATION disabled");
        reply_status(x, st);
    } else if (slice_is(a, "DISABLE")) {
        if (r) repl_disable(r);
        reply_ok(x);
    } else if (slice_is(a, "ENABLE")) {
        if (!r) {
            reply_error(x, "replication is not available on this node");
            return;
        }
        repl_enable(r);
        reply_ok(x);
    } else {
        reply_error(x, "Unknown REPLICATE action: %.*s", (int) a->len, (const char *) a->p);
    }
}

/* SYNC ended (mirror.h): the blocked client gets its reply. */
static void sync_done(void *arg, const char *why, bool answer)
{
    struct client *c = arg;
    c->ops->unblock(c);
    if (!answer) return;
    if (why)
        reply_error_to(&c->out, client_resp(c), why, strlen(why));
    else
        reply_ok_to(&c->out, client_resp(c));
}

/* The client of a SYNC went away before its reply: the SYNC goes on, unanswered. */
static void sync_client_closed(struct client *c, void *arg)
{
    (void) c;
    mirror_forget(arg);
}

/*
 * SYNC host port [--full] [--verify] (mirror.h). The line protocol's grammar validated the
 * arguments already (line.c); RESP arguments get the same checks and messages here. The client
 * is blocked until the SYNC ends, then answered OK or ERROR; inside MULTI/EXEC it cannot wait.
 */
void cmd_sync(struct cmd_ctx *x)
{
    int port;
    bool full, verify;
    const char *why;
    const struct slice *bad;
    if (line_sync_args(&x->argv[2], x->argc - 2, &port, &full, &verify, &why, &bad) < 0) {
        int n = bad ? (int) (bad->len < 64 ? bad->len : 64) : 0;
        reply_error(x, "%s%.*s", why, n, bad ? (const char *) bad->p : "");
        return;
    }
    if (x->in_exec) {
        reply_error(x, "SYNC cannot run inside MULTI/EXEC");
        return;
    }
    if (!x->srv->mirror) {
        reply_error(x, "SYNC is not available on this node");
        return;
    }
    const struct slice *h = &x->argv[1];
    char host[MIRROR_HOST_MAX + 1];
    if (h->len == 0 || h->len > MIRROR_HOST_MAX || memchr(h->p, '\0', h->len)) {
        reply_error(x, "Invalid host: must be 1 to %d bytes", MIRROR_HOST_MAX);
        return;
    }
    memcpy(host, h->p, h->len);
    host[h->len] = '\0';
    char err[512];
    if (mirror_start(x->srv->mirror, host, port, full, verify, sync_done, x->c, err, sizeof(err)) <
        0) {
        reply_error(x, "%s", err);
        return;
    }
    /* The reply waits for the end of the SYNC (sync_done). */
    x->c->ops->block(x->c, sync_client_closed, x->srv->mirror);
}

/*
 * ARBORKV.AE <request>: one anti-entropy request (docs/anti-entropy.md), answered as a bulk
 * string holding the answer message. The other side of SYNC; the name cannot collide with a
 * Redis command.
 */
void cmd_arborkv_ae(struct cmd_ctx *x)
{
    if (!x->srv->ae) {
        reply_error(x, "anti-entropy is not available on this node");
        return;
    }
    struct buf *b = scratch(x);
    int rc = ae_answer(x->srv->ae, x->argv[1].p, x->argv[1].len, b);
    if (rc == -EBADMSG)
        reply_error(x, "malformed anti-entropy request");
    else if (rc < 0)
        reply_storage_error(x);
    else
        resp_add_bulk(x->out, b->data, b->len);
}

void cmd_shutdown(struct cmd_ctx *x)
{
    /* The reply (line protocol) and every write of this turn are committed and flushed by
     * the before-sleep hook before the loop stops. RESP gets no reply, as from Redis: clients
     * such as redis-py treat a reply to SHUTDOWN as a failure. */
    if (!x->resp) reply_ok(x);
    x->c->ops->close_after_reply(x->c);
    x->srv->stopping = true;
}

void cmd_quit(struct cmd_ctx *x)
{
    reply_ok(x);
    x->c->ops->close_after_reply(x->c);
}

void cmd_config(struct cmd_ctx *x)
{
    const struct slice *sub = &x->argv[1];
    if (slice_is(sub, "RESETSTAT") && x->argc == 2) {
        memset(&x->srv->stats, 0, sizeof(x->srv->stats));
        reply_ok(x);
        return;
    }
    if (!slice_is(sub, "GET") || x->argc < 3) {
        reply_error(x, "CONFIG %.*s is not supported; arborkv is configured by its TOML file",
                    (int) (sub->len < 32 ? sub->len : 32), (const char *) sub->p);
        return;
    }
    /* Enough for redis-benchmark and client libraries that probe the server's settings. */
    char port[16], maxclients[24];
    (void) snprintf(port, sizeof(port), "%d", x->srv->port);
    (void) snprintf(maxclients, sizeof(maxclients), "%zu", x->srv->max_clients);
    const char *params[][2] = {
        { "save", "" },   { "appendonly", "no" },       { "maxmemory", "0" }, { "databases", "1" },
        { "port", port }, { "maxclients", maxclients }, { "timeout", "0" },
    };
    size_t nparams = sizeof(params) / sizeof(params[0]);
    struct buf *b = scratch(x);
    size_t n = 0;
    for (size_t i = 0; i < nparams; i++) {
        bool match = false;
        for (size_t j = 2; j < x->argc && !match; j++)
            match = glob_match(x->argv[j].p, x->argv[j].len, (const uint8_t *) params[i][0],
                               strlen(params[i][0]), true);
        if (!match) continue;
        resp_add_bulk_str(b, params[i][0]);
        resp_add_bulk_str(b, params[i][1]);
        n++;
    }
    resp_add_array_len(x->out, n * 2);
    buf_append(x->out, b->data, b->len);
}

void cmd_select(struct cmd_ctx *x)
{
    int64_t db;
    if (!parse_i64(x->argv[1].p, x->argv[1].len, &db))
        reply_error(x, "value is not an integer or out of range");
    else if (db != 0)
        reply_error(x, "DB index is out of range");
    else
        reply_ok(x);
}

void cmd_hello(struct cmd_ctx *x)
{
    if (x->argc > 1) {
        int64_t ver;
        if (!parse_i64(x->argv[1].p, x->argv[1].len, &ver)) {
            reply_error(x, "Protocol version is not an integer or out of range");
            return;
        }
        if (ver != 2) {
            reply_error_raw(x, "NOPROTO sorry, this protocol version is not supported");
            return;
        }
        if (x->argc > 2) {
            reply_error(x, "HELLO options (AUTH, SETNAME) are not supported");
            return;
        }
    }
    resp_add_array_len(x->out, 14);
    resp_add_bulk_str(x->out, "server");
    resp_add_bulk_str(x->out, "arborkv");
    resp_add_bulk_str(x->out, "version");
    resp_add_bulk_str(x->out, ARBORKV_VERSION);
    resp_add_bulk_str(x->out, "proto");
    resp_add_int(x->out, 2);
    resp_add_bulk_str(x->out, "id");
    resp_add_int(x->out, (int64_t) x->c->id);
    resp_add_bulk_str(x->out, "mode");
    resp_add_bulk_str(x->out, "standalone");
    resp_add_bulk_str(x->out, "role");
    resp_add_bulk_str(x->out, "master");
    resp_add_bulk_str(x->out, "modules");
    resp_add_array_len(x->out, 0);
}

void cmd_auth(struct cmd_ctx *x)
{
    reply_error(x, "AUTH <password> called without any password configured for the default user. "
                   "Are you sure your configuration is correct?");
}
