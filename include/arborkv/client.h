/* SPDX-License-Identifier: MIT */
/*
 * client: what the command layer (cmd*.c, SYNC in mirror.c) sees of a client connection: its
 * identity, protocol, output buffer and per-client command state, plus three operations the
 * connection module implements (close after the reply, defer the reply, resume). conn.c embeds a
 * struct client in each connection and hands the command layer only that, so the commands never
 * depend on the connection module, and conn.c depends on the commands (it dispatches to them),
 * not the other way round.
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_CLIENT_H
#define ARBORKV_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "arborkv/buf.h"

enum client_proto { CLIENT_PROTO_UNKNOWN = 0, CLIENT_PROTO_LINE, CLIENT_PROTO_RESP };

struct client;
struct multi_state; /* cmd.c's queued MULTI commands */

/* Called when a blocked client closes before its reply (see client_ops.block). */
typedef void client_close_fn(struct client *cl, void *arg);

struct client_ops {
    /* Closes the client once its pending output (this reply included) is written. */
    void (*close_after_reply)(struct client *cl);
    /* Defers the reply of the command running on cl (SYNC): no further request of cl runs, and
     * cl is not closed on EOF, until unblock. Other clients are served meanwhile. Should cl close
     * first (an error, shutdown), on_close(cl, arg) is called once, before cl is freed, and
     * whoever blocked it must forget cl. */
    void (*block)(struct client *cl, client_close_fn *on_close, void *arg);
    /* Ends the block: the caller appends the deferred reply to cl->out right after this call.
     * Like any reply it leaves after the turn's commit (and is withdrawn if that commit fails);
     * the client's buffered requests run after it. */
    void (*unblock)(struct client *cl);
};

struct client {
    const struct client_ops *ops; /* the connection module's */
    uint64_t id;                  /* unique client id (CLIENT LIST) */
    int fd;                       /* socket, -1 after close */
    char addr[64];                /* "ip:port" of the peer */
    enum client_proto proto;      /* chosen by the first byte received */
    struct buf out;               /* reply bytes (the connection writes them out after commit) */
    char *name;                   /* CLIENT SETNAME, heap or NULL */
    struct multi_state *multi;    /* queued MULTI commands (RESP MULTI), cmd.c owns it */
    uint64_t created_us;          /* loop_now_us() at accept */
    uint64_t last_cmd_us;         /* loop_now_us() of the last command */
    struct client *prev, *next;   /* server->clients list */
};

static inline bool client_resp(const struct client *cl)
{
    return cl->proto == CLIENT_PROTO_RESP;
}

#endif
