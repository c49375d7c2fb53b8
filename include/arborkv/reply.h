/* SPDX-License-Identifier: MIT */
/*
 * reply: what both the connection module and the command layer write to a client, encoded for
 * its protocol (line: "OK", "ERROR <msg>"; RESP2: "+OK", "-ERR <msg>"). The command layer's
 * reply helpers, which speak in meanings, are declared in src/cmd_int.h and live in reply.c too.
 */
#ifndef ARBORKV_REPLY_H
#define ARBORKV_REPLY_H

#include <stdbool.h>
#include <stddef.h>

struct buf;

/* Appends an OK reply (resp: RESP2 "+OK", else the line protocol's "OK"). */
void reply_ok_to(struct buf *out, bool resp);
/* Appends an error reply: line "ERROR <msg>", RESP2 "-ERR <msg>". */
void reply_error_to(struct buf *out, bool resp, const char *msg, size_t len);

#endif
