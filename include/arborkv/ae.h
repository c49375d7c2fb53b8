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
 * binary format documented in docs/anti-entropy.md and validated strictly on receipt. The same
 * messages also travel over a client connection: ae_answer answers one request into a buffer
 * (the RESP command ARBORKV.AE), and the initiator's descent (struct ae_walk) and record pages
 * (struct ae_recs) are shared with SYNC (mirror.c), which drives them over that connection.
 *
 * THREADING: event-loop thread only.
 */
#ifndef ARBORKV_AE_H
#define ARBORKV_AE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/ae_msg.h" /* the messages, their limits, RECS_REQ and RECS pages (ae_recs_*) */
#include "arborkv/buf.h"
#include "arborkv/store.h"

#define AE_PAGE_BYTES (256u * 1024) /* target size of a records page */

struct ae;
struct hlc;
struct loop;
struct merkle;
struct purge;
struct repl;

struct ae_opts {
    bool enabled;       /* run sessions by itself */
    int interval_s;     /* between rounds */
    int step_timeout_s; /* a step without an answer ends the session */
};

/*
 * Creates anti-entropy over the link r: it listens (repl_listen) on {prefix}/ae/{node id} and to
 * every connect of the link. After a connect, whatever a broker acknowledged and then lost (a
 * crash, a restart without persistence, a session it dropped) never arrives as an event, so
 * shortly after (AE_LINK_UP_DELAY_US, time for the outbox to drain) this node starts a session
 * with every online peer, whichever id is smaller: the later of two peers to reconnect thereby
 * repairs the pair (no-op when automatic sessions are disabled). 0 or -errno.
 */
/* The handles anti-entropy uses ([borrow]: they outlive it). */
struct ae_env {
    struct loop *loop;
    struct store *store;
    struct merkle *tree; /* compared with the peers' */
    struct hlc *hlc;     /* takes the timestamps of repaired records */
    struct purge *purge; /* its cutoff decides which dropped records go; NULL: never */
    const char *node_id;
};

int ae_new(struct ae **out, const struct ae_env *env, struct repl *r, const struct ae_opts *o);
void ae_free(struct ae *a); /* NULL-safe */

/* After the turn's COMMIT (committed) or ROLLBACK: sends, or drops, the messages that waited
 * for it (they may describe the transaction's writes). */
void ae_after_commit(struct ae *a, bool committed);

/* Starts a round now (tests, operators); no-op for pairs with a session running. */
void ae_run_now(struct ae *a);

/* Appends the anti-entropy lines of INFO ("name:value\r\n" each). */
void ae_info(const struct ae *a, struct buf *out);

/*
 * Answers one request message (NODES_REQ or RECS_REQ) statelessly, as the peer side of a session
 * does, appending the answer message to reply instead of publishing it. A RECS_REQ with no leaf
 * buckets (n = 0) asks for every record (SYNC --full). Returns 0, or -EBADMSG for a malformed
 * request (counted in ae_malformed; nothing appended), or -EIO on a storage error.
 */
int ae_answer(struct ae *a, const uint8_t *req, size_t len, struct buf *reply);

/*
 * Calls fn (store_scan's contract) for the records of leaf buckets leaves[0..n) of this node's
 * tree (n == 0: every record), in key order, starting strictly after key `after` when has_after.
 * flags are store_scan's (STORE_SCAN_LIVE, STORE_SCAN_KEYS_ONLY). Returns store_scan's result.
 */
int ae_scan_leaves(struct ae *a, const uint32_t *leaves, uint32_t n, const uint8_t *after,
                   size_t after_len, bool has_after, unsigned flags, store_scan_fn *fn, void *arg);

/* ---- the initiator's side, shared by sessions and SYNC ------------------------------------- */

/*
 * The descent over the peer's tree: starting at the root, the children of the nodes in cur are
 * asked for (in chunks of AE_MAX_NODES_REQ) and those whose digest differs from this node's go
 * to the next level, until cur holds the differing leaf buckets, which are then handed out in
 * chunks of AE_MAX_LEAVES_REQ. One request is outstanding at a time.
 */
struct ae_walk {
    unsigned level;         /* level of the nodes in cur (0 = root); the depth at the leaves */
    bool at_leaves;         /* cur holds differing leaf buckets */
    uint32_t *cur;          /* nodes to expand, or differing leaves; heap, owned */
    size_t ncur, cap_cur;   /* entries used / allocated in cur */
    size_t chunk, chunk_n;  /* the slice cur[chunk .. chunk + chunk_n) being worked on */
    uint32_t *next;         /* differing children found so far (level + 1); heap, owned */
    size_t nnext, cap_next; /* entries used / allocated in next */
    unsigned peer_fanout;   /* the peer's tree shape, from its last NODES answer */
    unsigned peer_depth;    /* (reported when it differs from ours) */
    uint64_t digests;       /* node digests received */
};

enum ae_walk_step {
    AE_WALK_NODES = 1,  /* ask for the next chunk of nodes (ae_walk_nodes_req) */
    AE_WALK_LEAVES = 2, /* the descent is over: cur holds the differing leaves */
    AE_WALK_EQUAL = 3,  /* nothing differs */
};

void ae_walk_init(struct ae_walk *w); /* at the root */
void ae_walk_clear(struct ae_walk *w);

/* Builds in out (reset first) a NODES_REQ, from `from` in session sid, for the next chunk of
 * the nodes in w. */
void ae_walk_nodes_req(struct ae_walk *w, uint64_t sid, const char *from, struct buf *out);

/*
 * Takes the peer's answer (a whole message) to the last ae_walk_nodes_req of session sid and
 * compares its digests with this node's tree. Returns the next step (enum ae_walk_step),
 * -EPROTO when the peer's tree has another shape (w->peer_fanout, w->peer_depth), or -EBADMSG
 * when the answer is malformed or not the one expected.
 */
int ae_walk_on_nodes(struct ae *a, struct ae_walk *w, uint64_t sid, const uint8_t *msg, size_t len);

/* At the leaves: moves to the next chunk of differing leaves; false when all were handed out.
 * The chunk is w->cur[w->chunk .. w->chunk + w->chunk_n). */
bool ae_walk_next_leaves(struct ae_walk *w);

/* Then the pages of records of those leaves: ae_recs_req, and struct ae_recs with
 * ae_recs_open/ae_recs_next, in ae_msg.h. */

#endif
