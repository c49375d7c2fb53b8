/* SPDX-License-Identifier: MIT */
/*
 * repl: replication over MQTT (replication.md §1-§3, docs/replication.md).
 *
 * Outgoing: kv_write reports every local change with repl_record; the turn's events are encoded
 * (codec) into batch messages and stored in the SQLite outbox by repl_before_commit, inside the
 * turn's transaction. After the commit, repl_pump publishes the outbox oldest first, with a
 * bounded number of unacknowledged messages; a PUBACK deletes its row.
 *
 * Incoming: events from {prefix}/events/# are decoded strictly and applied with last-write-wins
 * in the turn's transaction (group commit); own events are ignored. Presence from
 * {prefix}/nodes/+ counts the peers online.
 *
 * THREADING: event-loop thread only (the mqtt module hides paho's threads).
 */
#ifndef ARBORKV_REPL_H
#define ARBORKV_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arborkv/buf.h"
#include "arborkv/codec.h"
#include "arborkv/record.h"

struct hlc;
struct loop;
struct merkle;
struct repl;
struct store;

/* The handles replication uses ([borrow]: they outlive it). */
struct repl_env {
    struct loop *loop;
    struct store *store; /* records, outbox */
    struct merkle *tree; /* presence shows its root; NULL: none */
    struct hlc *hlc;     /* clock of the node: takes the timestamps of applied events */
    const char *node_id; /* this node's id: its topics, its own events */
};

struct repl_opts {
    bool enabled;       /* connect at startup */
    const char *broker; /* host */
    int port;
    const char *prefix;   /* topic prefix */
    const char *username; /* NULL: none */
    const char *password; /* NULL: none */
    const char *tls_ca_file, *tls_cert_file, *tls_key_file;
    int keepalive_s;
    int mqtt_version;   /* 5: No Local subscription to the events; 3: MQTT 3.1.1 */
    bool wire_merklekv; /* one event per message, integer arrays */
    size_t batch_max_events;
    size_t max_inflight;
    uint64_t outbox_max_events;
    int reconnect_max_s;
    int stall_timeout_s; /* the MQTT link's stall bound (mqtt.h) */
    const char *addr;    /* "host:port" clients use, for presence */
};

/* Creates the replication layer (and starts connecting when opts->enabled). 0 or -errno. */
int repl_new(struct repl **out, const struct repl_env *env, const struct repl_opts *opts);

/* Publishes the offline presence, disconnects (at most timeout_ms), frees. NULL-safe. */
void repl_free(struct repl *r, int timeout_ms);

/* Records a committed-to-be local change for publication (rec: [borrow]). */
void repl_record(struct repl *r, enum codec_op op, const struct store_rec *rec);

/* Inside the turn's open transaction, before COMMIT: stores the turn's events in the outbox.
 * Returns 0 or -EIO (the transaction must then be rolled back). */
int repl_before_commit(struct repl *r);

/* After the turn's COMMIT (committed) or ROLLBACK (!committed). */
void repl_after_commit(struct repl *r, bool committed);

/* Publishes what the outbox holds and the window allows; call with no transaction open. */
void repl_pump(struct repl *r);

/* REPLICATE enable / disable at run time. */
void repl_enable(struct repl *r);
void repl_disable(struct repl *r);
bool repl_is_enabled(const struct repl *r);
size_t repl_peers_online(const struct repl *r);

/*
 * A module that talks to peers over the link (anti-entropy) listens here rather than being
 * called by name, so replication depends on nothing above it: on_message gets every payload
 * published to {prefix}/{suffix}/{this node's id}; on_link_up (optional) runs after each connect,
 * once the outbox has started publishing again. One listener; suffix is copied. 0 or -errno.
 */
struct repl_listener {
    const char *suffix;
    void (*on_message)(void *arg, const uint8_t *payload, size_t len);
    void (*on_link_up)(void *arg);
    void *arg;
};
int repl_listen(struct repl *r, const struct repl_listener *l);

/* Publishes payload (copied) to {prefix}/{suffix}, QoS 1. 0, or -ENOTCONN when not connected. */
int repl_publish(struct repl *r, const char *suffix, const void *payload, size_t len);

/* Fills names with up to max ids of peers whose presence is online ([borrow] until the next
 * presence message); returns how many. */
size_t repl_online_peers(const struct repl *r, const char **names, size_t max);

/* The link's state for operators: "disabled", "connecting", "connected" or "stalled". */
const char *repl_link_state(const struct repl *r);

/* Appends the replication lines of INFO ("name:value\r\n" each). */
void repl_info(const struct repl *r, struct buf *out);

#endif
