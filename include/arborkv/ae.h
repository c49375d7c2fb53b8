/* SPDX-License-Identifier: MIT */
/*
 * ae: automatic Merkle anti-entropy through the broker (replication.md §4, docs/anti-entropy.md).
 *
 * Every interval, this node opens one repair session with each online peer whose node id sorts
 * after its own (so a pair has at most one session at a time). The session descends the two
 * Merkle trees level by level, asking the peer only for the children of differing nodes, then
 * exchanges the records of the differing leaf buckets both ways (paged) and applies them with
 * last-write-wins. The peer answers statelessly. A step that gets no answer within the timeout
 * ends the session as failed; the next interval starts over.
 *
 * Messages travel on {prefix}/ae/{node_id} (each node subscribes to its own), QoS 1, in a compact
 * binary format documented in docs/anti-entropy.md and validated strictly on receipt.
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_AE_H
#define ARBORKV_AE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/buf.h"

#define AE_MAX_MESSAGE    (4u * 1024 * 1024) /* bytes of one received message */
#define AE_PAGE_BYTES     (256u * 1024)      /* target size of a records page */
#define AE_MAX_NODES_REQ  512                /* nodes whose children one request asks for */
#define AE_MAX_LEAVES_REQ 256                /* leaf buckets one records request covers */

struct server;
struct repl;
struct ae;

struct ae_opts {
    bool enabled;       /* run sessions by itself */
    int interval_s;     /* between rounds */
    int step_timeout_s; /* a step without an answer ends the session */
};

int ae_new(struct ae **out, struct server *srv, struct repl *r, const struct ae_opts *o);
void ae_free(struct ae *a); /* NULL-safe */

/* Handles a message received on this node's ae topic. */
void ae_on_message(struct ae *a, const uint8_t *payload, size_t len);

/* After the turn's COMMIT (committed) or ROLLBACK: sends, or drops, the messages that waited
 * for it (they may describe the transaction's writes). */
void ae_after_commit(struct ae *a, bool committed);

/* Starts a round now (tests, operators); no-op for pairs with a session running. */
void ae_run_now(struct ae *a);

/* Appends the anti-entropy lines of INFO ("name:value\r\n" each). */
void ae_info(const struct ae *a, struct buf *out);

#endif
