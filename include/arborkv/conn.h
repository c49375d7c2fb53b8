/* SPDX-License-Identifier: MIT */
/*
 * conn: the TCP listener and client connections: non-blocking sockets, input and output buffers,
 * protocol detection (first byte '*' -> RESP2, else line protocol, protocol.md intro), framing,
 * per-client limits, and the order that makes replies durable before they leave.
 *
 * Replies are never written while commands run. Handlers append to c->out; the loop's before-sleep
 * hook commits the turn's transaction first (turn.h) and only then writes every pending
 * output buffer (redis beforeSleep order). A failed commit replaces the turn's replies with an
 * error and closes those clients, so nothing is acknowledged that is not durable.
 *
 * Limits: a client whose unsent output exceeds CONN_SOFT_OUTPUT_BYTES stops being read and its
 * pipelined input is not processed until it drains (backpressure); over the configured output
 * limit (one huge reply) it is disconnected. Input is bounded by the protocol limits.
 *
 * THREADING: event-loop thread only. A connection is never freed inside its own callback: it is
 * marked closing and freed by the reaper at the end of the turn.
 */
#ifndef ARBORKV_CONN_H
#define ARBORKV_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/buf.h"
#include "arborkv/client.h"
#include "arborkv/line.h"
#include "arborkv/resp.h"

#define CONN_LISTEN_BACKLOG    1024          /* >= 511 as the issue requires */
#define CONN_READ_CHUNK        (64 * 1024)   /* bytes read per readable event */
#define CONN_SOFT_OUTPUT_BYTES (1024 * 1024) /* pause reading above this much unsent output */
#define CONN_BLOCKED_INPUT     (1024 * 1024) /* stop reading a blocked client above this input */

struct server;

enum conn_flags {
    CONN_CLOSE_AFTER_REPLY = 1 << 0, /* close once out is flushed (QUIT, protocol error) */
    CONN_CLOSING = 1 << 1,           /* unregistered, queued for the reaper */
    CONN_PENDING = 1 << 2,           /* on the turn's pending list */
    CONN_RAN = 1 << 3,               /* ran a command this turn; turn_mark is valid */
    CONN_EOF = 1 << 4,               /* peer closed its sending side */
    CONN_REJECT = 1 << 5,            /* over max_clients: answer the first request with an error */
    CONN_PAUSED = 1 << 7,            /* input left unprocessed: unsent output, or unblocked */
    CONN_BLOCKED = 1 << 8,           /* a command's reply is deferred (client_ops.block) */
};

struct conn {
    struct client cl;          /* what the command layer sees (client.h); first member */
    struct server *srv;        /* owning server */
    unsigned flags;            /* enum conn_flags */
    unsigned mask;             /* LOOP_READ|LOOP_WRITE currently registered */
    struct buf in;             /* received, not yet consumed bytes */
    size_t out_pos;            /* bytes of cl.out already written */
    size_t turn_mark;          /* cl.out.len before this turn's first command (CONN_RAN) */
    struct line_parser lp;     /* line framing state */
    struct line_cmd lcmd;      /* parsed line request (argv storage reused) */
    struct resp_parser rp;     /* RESP framing state */
    struct slice *argv;        /* RESP argv storage, reused */
    size_t argv_cap;           /* entries in argv */
    client_close_fn *on_close; /* CONN_BLOCKED: told if c closes before it is unblocked */
    void *on_close_arg;        /* its argument */
    struct conn *pending_next; /* server->pending list */
    struct conn *closing_next; /* server->closing list */
};

/* Sets up the module's state on srv (before conn_listen); conn_fini releases it after
 * conn_close_all. */
void conn_init(struct server *srv);
void conn_fini(struct server *srv); /* NULL-safe */

/* Opens the listening socket on host:port and registers it. Returns 0 or -errno (logged). */
int conn_listen(struct server *srv, const char *host, int port);
/* Stops accepting (closes the listener). */
void conn_stop_listening(struct server *srv);

/*
 * The connections' part of the loop's before-sleep hook (node.c), around the turn's commit
 * (turn.h), in this order:
 *   conn_run_buffered   runs the buffered requests of clients whose output has drained;
 *   (turn_end)          commits; on failure its hook calls conn_withdraw_turn;
 *   conn_flush_turn     writes the replies out; true while clients still have requests buffered
 *                       (the hook repeats the three a few times);
 *   conn_end_turn       keeps the loop from sleeping on buffered work, frees closed connections.
 */
void conn_run_buffered(struct server *srv);
void conn_withdraw_turn(struct server *srv);
bool conn_flush_turn(struct server *srv);
void conn_end_turn(struct server *srv);

/* The client operations (client.h) of every connection: close after reply, block, unblock. */
extern const struct client_ops conn_client_ops;

/* Shutdown: best-effort flush of every client's output within timeout_us, then close them all. */
void conn_close_all(struct server *srv, uint64_t timeout_us);

/* Bytes of output not yet written. */
static inline size_t conn_unsent(const struct conn *c)
{
    return c->cl.out.len - c->out_pos;
}

#endif
