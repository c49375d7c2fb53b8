/* SPDX-License-Identifier: MIT */
/*
 * cmd_int.h: internals shared by cmd.c (table, dispatch, replies), cmd_kv.c (data commands) and
 * cmd_admin.c (server commands). Private to the command layer: never include it elsewhere.
 *
 * Reply helpers speak in meanings ("a value", "not found", "an integer named X") and encode them
 * for the client's protocol: the same handler serves `GET k` (line: "VALUE v") and RESP GET
 * ("$1\r\nv"). Where the two protocols differ in more than encoding (DEL of several keys, SCAN
 * with a cursor), the handler branches on x->resp.
 */
#ifndef ARBORKV_CMD_INT_H
#define ARBORKV_CMD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/buf.h"
#include "arborkv/codec.h"
#include "arborkv/server.h"

struct client;

struct cmd_ctx {
    struct server *srv;       /* server */
    struct client *c;         /* client the reply goes to (client.h) */
    const struct slice *argv; /* [borrow] request; argv[0] is the command name */
    size_t argc;              /* entries in argv, >= 1 */
    struct buf *out;          /* &c->out */
    bool resp;                /* true: RESP2 client, false: line protocol */
    bool in_exec;             /* run by EXEC: the reply cannot be deferred */
};

typedef void cmd_fn(struct cmd_ctx *x);

enum cmd_flags {
    CMD_LINE = 1 << 0, /* reachable from the line protocol (after line.c's grammar) */
    CMD_RESP = 1 << 1, /* reachable from RESP2 */
    CMD_TXN = 1 << 2,  /* MULTI/EXEC/DISCARD/WATCH/QUIT: run immediately even inside MULTI */
};

struct cmd_def {
    const char *name;  /* upper case; the table is sorted by name (checked in cmd_init) */
    int arity;         /* RESP argc: N exactly, or -N for at least N */
    unsigned flags;    /* enum cmd_flags */
    enum stat_cat cat; /* STATS family */
    cmd_fn *fn;        /* handler */
};

/* State of the command layer, hung on server->cmd_state. */
struct cmd_state {
    struct buf tmp;              /* scratch for building values and multi-line replies */
    struct buf tmp2;             /* second scratch buffer */
    struct scan_cursor *cursors; /* RESP SCAN cursor ring, CMD_SCAN_CURSORS entries */
    size_t next_cursor_slot;     /* ring position of the next cursor to hand out */
    uint64_t cursor_seq;         /* last cursor id handed out */
};

/* ---- replies (reply.c) ---- */
void reply_ok(struct cmd_ctx *x);
/* Line: "ERROR <msg>"; RESP: "-ERR <msg>". */
void reply_error(struct cmd_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* RESP only: an error with its own code word, e.g. "NOPROTO ...". */
void reply_error_raw(struct cmd_ctx *x, const char *msg);
/* Line: "VALUE <v>"; RESP: bulk string. */
void reply_value(struct cmd_ctx *x, const void *p, size_t len);
/* Line: "NOT_FOUND"; RESP: null bulk. */
void reply_not_found(struct cmd_ctx *x);
/* Line: "<name> <n>"; RESP: integer. */
void reply_int_named(struct cmd_ctx *x, const char *name, int64_t n);
/* Line: "<name> <text>" (or "<name>" when text is empty); RESP: bulk string of text. */
void reply_text_named(struct cmd_ctx *x, const char *name, const char *text);
/* Line: "<status>"; RESP: "+<status>". */
void reply_status(struct cmd_ctx *x, const char *status);
/* Line: "<header>" line, then the lines of body (which must end in CRLF or be empty);
 * RESP: the body as one bulk string with CRLF line ends. */
void reply_lines(struct cmd_ctx *x, const char *header, const struct buf *body);

/* Reports a storage failure to the client ("storage error"). Local writes: kv_write (kv.h). */
void reply_storage_error(struct cmd_ctx *x);

/* ---- handlers ---- */
void cmd_get(struct cmd_ctx *x);
void cmd_set(struct cmd_ctx *x);
void cmd_setnx(struct cmd_ctx *x);
void cmd_getset(struct cmd_ctx *x);
void cmd_getdel(struct cmd_ctx *x);
void cmd_del(struct cmd_ctx *x);
void cmd_incrby(struct cmd_ctx *x);
void cmd_append(struct cmd_ctx *x);
void cmd_strlen(struct cmd_ctx *x);
void cmd_mget(struct cmd_ctx *x);
void cmd_mset(struct cmd_ctx *x);
void cmd_exists(struct cmd_ctx *x);
void cmd_dbsize(struct cmd_ctx *x);
void cmd_flushdb(struct cmd_ctx *x);
void cmd_scan(struct cmd_ctx *x);
void cmd_keys(struct cmd_ctx *x);
void cmd_type(struct cmd_ctx *x);
void cmd_ttl(struct cmd_ctx *x);
void cmd_hash(struct cmd_ctx *x);

void cmd_ping(struct cmd_ctx *x);
void cmd_echo(struct cmd_ctx *x);
void cmd_memory(struct cmd_ctx *x);
void cmd_client(struct cmd_ctx *x);
void cmd_stats(struct cmd_ctx *x);
void cmd_info(struct cmd_ctx *x);
void cmd_version(struct cmd_ctx *x);
void cmd_sync(struct cmd_ctx *x);
void cmd_arborkv_ae(struct cmd_ctx *x);
void cmd_replicate(struct cmd_ctx *x);
void cmd_shutdown(struct cmd_ctx *x);
void cmd_quit(struct cmd_ctx *x);
void cmd_command(struct cmd_ctx *x);
void cmd_config(struct cmd_ctx *x);
void cmd_select(struct cmd_ctx *x);
void cmd_hello(struct cmd_ctx *x);
void cmd_auth(struct cmd_ctx *x);
void cmd_multi(struct cmd_ctx *x);
void cmd_exec(struct cmd_ctx *x);
void cmd_discard(struct cmd_ctx *x);
void cmd_watch(struct cmd_ctx *x);

/* SCAN cursors (cmd_kv.c). */
#define CMD_SCAN_CURSORS 1024 /* live RESP SCAN cursors kept; older ones expire */
void scan_cursors_free(struct cmd_state *st);

#endif
