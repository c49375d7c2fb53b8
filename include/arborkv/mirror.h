/* SPDX-License-Identifier: MIT */
/*
 * mirror: the client command SYNC host port [--full] [--verify] (replication.md §4, MerkleKV
 * semantics): make this node hold exactly the live data of the node at host:port, over that
 * node's client TCP port. (The module is not called "sync": conventions.md keeps libc's names.)
 *
 * Against arborkv (detected by an ARBORKV.AE request over RESP) only what differs moves: the two
 * Merkle trees are compared level by level and the records of differing leaf buckets are
 * fetched, page by page, with the anti-entropy messages of ae.h. With --full, or when the trees
 * have different shapes, every record is fetched, page by page, the same way. Against a server
 * that does not know ARBORKV.AE (MerkleKV), the fallback is the line protocol: SCAN, then GET
 * of every key, pipelined in a bounded window.
 *
 * Local writes: a remote record that beats the local one in last-write-wins order is stored as
 * it is (as an anti-entropy repair: kv_apply_remote, not published as an event). Where the local
 * record wins (or the remote sent only a value, with no timestamp) but the live values differ, the
 * remote's value (or absence) is written as a new local write (kv_write: fresh HLC ts, published
 * as an event like a client write), so it supersedes the local record here and on the peers.
 * Local keys the remote lacks are deleted that same way.
 *
 * One SYNC runs at a time. It never blocks the event loop: the remote socket is non-blocking and
 * every step is an event (resolver thread for host names, connect, replies, a zero-delay timer
 * between batches of deletions); the requesting client is blocked (client.h) until the end,
 * and each step has a timeout, so a dead remote ends in an error. Memory is bounded by one page
 * of records (plus the remote's key list on the line fallback).
 *
 * THREADING: event-loop thread only (the resolver thread touches nothing of this module's state;
 * it hands its result over a pipe).
 */
#ifndef ARBORKV_MIRROR_H
#define ARBORKV_MIRROR_H

#include <stdbool.h>
#include <stddef.h>

#include "arborkv/buf.h"

#define MIRROR_GET_WINDOW   64                 /* line fallback: GETs in flight at most */
#define MIRROR_DELETE_BATCH 1024               /* local keys deleted per loop turn at most */
#define MIRROR_HOST_MAX     255                /* bytes of a host name */
#define MIRROR_MAX_LINE     (1024 * 1024 + 64) /* bytes of one line reply (fallback) */
#define MIRROR_MAX_BULK     (64u * 1024 * 1024 + 512 * 1024) /* bytes of one RESP reply */

struct ae;
struct hlc;
struct kv;
struct loop;
struct merkle;
struct store;
struct mirror;

struct mirror_opts {
    int timeout_s; /* a step (resolve, connect, one reply) taking longer fails the SYNC */
};

/* The handles SYNC uses ([borrow]: they outlive it). */
struct mirror_env {
    struct loop *loop;
    struct store *store;
    struct merkle *tree; /* its shape must match the remote's for a tree walk */
    struct hlc *hlc;     /* takes the timestamps of records applied as repairs */
    struct ae *ae;       /* the descent and record pages (ae.h); NULL: SYNC unavailable */
    const struct kv *kv; /* local writes of the remote's state */
};

/* Returns 0 with *out (**new**, release with mirror_free). */
int mirror_new(struct mirror **out, const struct mirror_env *env, const struct mirror_opts *o);
/* Abandons a SYNC in progress (its client is not answered) and frees m. NULL-safe. */
void mirror_free(struct mirror *m);

/*
 * How a SYNC ended: why is NULL when it succeeded, else the reason (the client's error message,
 * [borrow] for the call); answer is false when it was abandoned (mirror_free: the node is going
 * away), and the requester should then only be released, not answered.
 */
typedef void mirror_done_fn(void *arg, const char *why, bool answer);

/*
 * Starts SYNC from host:port (host [borrow], copied). Returns 0 when started: done(done_arg, …)
 * is called once when it ends, from a loop event (never from inside this call). Returns <0 when
 * it cannot start or failed at once, with the reason (the client's error message) in err:
 * -EBUSY (a SYNC is in progress), -EINVAL (bad host), -ECONNREFUSED (resolving or connecting
 * failed on the spot); done is then never called.
 */
int mirror_start(struct mirror *m, const char *host, int port, bool full, bool verify,
                 mirror_done_fn *done, void *done_arg, char *err, size_t errlen);

/* The requester went away: the SYNC in progress goes on, but done will not be called. */
void mirror_forget(struct mirror *m);

/* Appends the SYNC lines of INFO ("name:value\r\n" each). NULL-safe. */
void mirror_info(const struct mirror *m, struct buf *out);

#endif
