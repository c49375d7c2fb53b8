/* SPDX-License-Identifier: MIT */
/*
 * cmd: the command table, dispatch and handlers shared by both protocols.
 *
 * line.c and resp.c each turn a request into an argv; cmd_dispatch looks the command up
 * (case-insensitively, per protocol), checks RESP arity centrally, counts it for STATS and runs
 * the handler, which appends the reply in the connection's protocol to c->out. Write handlers
 * open the turn's transaction (store_begin); conn.c commits it before any reply is sent.
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_CMD_H
#define ARBORKV_CMD_H

#include <stddef.h>

struct server;
struct client;
struct slice;

/* Sets up the command layer's state in srv (SCAN cursors). */
void cmd_init(struct server *srv);
/* Frees what cmd_init set up. */
void cmd_free(struct server *srv);

/*
 * Runs one request. argv[0] is the command name; argv slices are [borrow] for the call.
 * The reply is appended to c->out; the handler may mark c to close after the reply.
 */
void cmd_dispatch(struct client *cl, struct server *srv, const struct slice *argv, size_t argc);

/* Releases per-connection command state (MULTI queue, client name). */
void cmd_client_clear(struct client *cl);

#endif
