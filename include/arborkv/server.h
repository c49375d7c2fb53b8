/* SPDX-License-Identifier: MIT */
/*
 * server: the context of the connection and command layers (conn.c, cmd*.c), filled by the wiring
 * (node.c). The data modules (replication, anti-entropy, SYNC, purge, the write path) never see
 * it: each gets the handles it needs at init (repl_env, ae_env, mirror_env, struct kv).
 *
 * It holds the handles those two layers use (loop, store, clock, modules behind opaque
 * pointers), the client list (client.h), the counters of STATS and INFO, and the handful of
 * configuration values they need (copied from struct conf by node.c, so neither layer depends on
 * the config module). conn.c's own state is behind `conns`. There is exactly one per process, but
 * it is passed explicitly, never reached through a global.
 *
 * THREADING: owned by the event-loop thread.
 */
#ifndef ARBORKV_SERVER_H
#define ARBORKV_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/hlc.h"
#include "arborkv/kv.h"
#include "arborkv/opid.h"

struct loop;
struct store;
struct merkle;
struct client;
struct conns;
struct repl;
struct ae;
struct purge;
struct mirror;
struct turn;

/* Command families counted by STATS (protocol.md §4), in output order. */
enum stat_cat {
    STAT_GET,
    STAT_SCAN,
    STAT_PING,
    STAT_ECHO,
    STAT_FLUSHDB,
    STAT_MEMORY,
    STAT_CLIENTLIST,
    STAT_EXISTS,
    STAT_DBSIZE,
    STAT_SET,
    STAT_DELETE,
    STAT_NUMERIC,
    STAT_STRING,
    STAT_BULK,
    STAT_STAT,
    STAT_SYNC,
    STAT_HASH,
    STAT_REPLICATE,
    STAT_MANAGEMENT,
    STAT_NONE, /* counted in total_commands only */
    STAT_NCATS
};

struct server_stats {
    uint64_t total_connections;        /* connections accepted since start */
    uint64_t rejected_connections;     /* refused because max_clients was reached */
    uint64_t total_commands;           /* parsed commands, counted before they run */
    uint64_t by_cat[STAT_NCATS];       /* per family, see enum stat_cat */
    uint64_t output_limit_disconnects; /* clients dropped for exceeding client_output_limit */
    uint64_t protocol_errors;          /* connections closed for a protocol error */
};

struct server {
    struct loop *loop;         /* event loop (borrowed from main) */
    struct store *store;       /* record store (borrowed from main) */
    struct turn *turn;         /* the turn's commit (owned by main); INFO reads its counters */
    struct merkle *tree;       /* Merkle tree over the store's records (borrowed from main) */
    struct hlc hlc;            /* hybrid logical clock for local writes */
    struct opid_pool opids;    /* random op_ids of local writes */
    struct kv kv;              /* the local write path's handles (store, clock, op_ids, repl) */
    struct repl *repl;         /* replication layer (owned by main), NULL when not built */
    struct ae *ae;             /* anti-entropy (owned by main), NULL when not built */
    struct purge *purge;       /* tombstone purge (owned by main), NULL when not built */
    struct mirror *mirror;     /* SYNC (owned by main), NULL when not built */
    const char *node_id;       /* [borrow] this node's id, from the config */
    const char *engine_name;   /* "sqlite" or "memory" */
    const char *fsync_name;    /* "normal" or "always" */
    int port;                  /* bound TCP port (the real one when 0 was configured) */
    size_t max_clients;        /* connections beyond this are refused */
    size_t output_limit;       /* bytes of unsent output before a client is dropped */
    struct conns *conns;       /* the connection module's own state (conn.c) */
    struct client *clients;    /* doubly linked list of live connections (client.h) */
    size_t nclients;           /* entries in clients */
    bool stopping;             /* SHUTDOWN or a signal: stop once replies are flushed */
    uint64_t start_us;         /* loop_now_us() at start */
    uint64_t start_unix_s;     /* wall clock at start, seconds */
    struct server_stats stats; /* counters for STATS/INFO */
    void *cmd_state;           /* command layer's private state (SCAN cursors); cmd.c owns it */
};

#endif
