/* SPDX-License-Identifier: MIT */
/*
 * mqtt: the MQTT link, on paho.mqtt.c's asynchronous client (MQTTAsync), seen from the event loop.
 *
 * Paho runs its own threads and calls back on them. This module's callbacks do nothing there but
 * copy what arrived (connection state, messages, publish acknowledgements) onto a queue and wake
 * the loop through an eventfd; the loop thread then calls the handlers below. So every handler,
 * and every function of this header, runs on the event-loop thread, and the layers above never
 * see a paho thread.
 *
 * The link connects in the background and reconnects after any failure or loss with exponential
 * backoff (100 ms doubling up to reconnect_max_s, ±25% jitter). Subscriptions registered with
 * mqtt_subscribe() are (re)made after every connect. Sessions are persistent (MQTT 3.1.1: clean
 * session off; MQTT 5: clean start off and a session that never expires): the broker queues QoS 1
 * messages for this client id while it is away. With MQTT 5 a subscription can ask for No Local:
 * the broker then never sends this client its own publishes.
 *
 * Liveness: a connection that paho reports as up may carry nothing (its queues full, no
 * acknowledgement coming back). While publishes are outstanding, an acknowledgement must arrive
 * within stall_timeout_ms, and sends must not be refused for longer than that; otherwise the link
 * reports MQTT_STALLED (after at most a second) and is then replaced by a fresh client, exactly
 * as if the connection had been lost (on_disconnect, reconnect, on_connect). See
 * docs/replication.md, "When the link stalls".
 *
 * Flow control: when messages arrive faster than the loop drains them, paho's receive thread
 * waits (MQTT_QUEUE_MAX_BYTES), which stops reading the socket and lets TCP push back on the
 * broker.
 */
#ifndef ARBORKV_MQTT_H
#define ARBORKV_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MQTT_QUEUE_MAX_BYTES (64u * 1024 * 1024) /* received bytes waiting for the loop */

struct loop;
struct mqtt;

enum mqtt_state {
    MQTT_STOPPED = 0, /* not started, or stopped */
    MQTT_CONNECTING,  /* a connect is in progress or scheduled */
    MQTT_CONNECTED,   /* CONNACK received, and the link makes progress */
    MQTT_STALLED,     /* connected, but no acknowledgement comes or sends are refused (only as
                         reported by mqtt_state; publishing is still attempted) */
};

struct mqtt_opts {
    const char *host;        /* broker host */
    int port;                /* broker port */
    const char *client_id;   /* MQTT client id (the node id) */
    const char *username;    /* NULL: none */
    const char *password;    /* NULL: none */
    const char *tls_ca_file; /* non-NULL: connect with TLS (ssl://), verifying the broker */
    const char *tls_cert_file;
    const char *tls_key_file;
    int keepalive_s;        /* MQTT keep-alive */
    int version;            /* 5 (MQTT 5) or 3 (MQTT 3.1.1) */
    int reconnect_max_s;    /* backoff cap */
    int stall_timeout_ms;   /* no progress this long: replace the link (<= 0: 5,000) */
    const char *will_topic; /* last will (retained, QoS 1); NULL: none */
    const char *will_payload;
};

struct mqtt_handlers {
    void (*on_connect)(void *arg);
    void (*on_disconnect)(void *arg, const char *why);
    void (*on_message)(void *arg, const char *topic, const uint8_t *payload, size_t len);
    /* A publish with this tag was acknowledged (QoS 1: PUBACK) or failed. */
    void (*on_published)(void *arg, uint64_t tag, bool ok);
};

/*
 * Creates the link (not started). All strings of opts are copied. Returns 0 or a negative errno
 * with a reason logged (bad options, eventfd failure, paho refusing the client).
 */
int mqtt_new(struct mqtt **out, struct loop *l, const struct mqtt_opts *opts,
             const struct mqtt_handlers *h, void *arg);

/* Disconnects (waiting at most timeout_ms for pending sends) and frees. NULL-safe. */
void mqtt_free(struct mqtt *m, int timeout_ms);

/* Starts connecting in the background (no-op when started). */
void mqtt_start(struct mqtt *m);

/* Disconnects and stays disconnected until mqtt_start (no-op when stopped). */
void mqtt_stop(struct mqtt *m, int timeout_ms);

/*
 * Adds a topic filter subscribed with QoS 1 after every connect (and now, when connected).
 * no_local (MQTT 5 only; ignored with 3.1.1): the broker does not send back this client's own
 * messages on it.
 */
int mqtt_subscribe(struct mqtt *m, const char *filter, bool no_local);

/* Whether subscriptions made with no_local really filter (the link speaks MQTT 5). */
bool mqtt_no_local(const struct mqtt *m);

/*
 * Publishes (payload copied). Only while connected: returns 0, -ENOTCONN when not connected, or
 * -EIO when paho refused it. on_published(tag) follows a 0 return, unless the connection drops
 * first (then on_disconnect tells the caller to consider everything unacknowledged).
 */
int mqtt_publish(struct mqtt *m, const char *topic, const void *payload, size_t len, int qos,
                 bool retain, uint64_t tag);

/* The state as reported to operators: MQTT_STALLED when connected without progress. */
enum mqtt_state mqtt_state(const struct mqtt *m);
const char *mqtt_state_name(enum mqtt_state s);
/* Whether the link is connected, stalled or not: publishes are attempted only then. */
bool mqtt_is_up(const struct mqtt *m);
/*
 * QoS 1 publishes that would go on the wire now (0 when not connected): the broker's Receive
 * Maximum (MQTT 5; 65535 without one, and with MQTT 3.1.1) minus those awaiting acknowledgement.
 * Publishes beyond it wait in paho's queue for up to a second after the window frees, so a bulk
 * sender (the outbox) sends only while there is room.
 */
uint32_t mqtt_send_room(const struct mqtt *m);

struct mqtt_link_info {
    uint64_t forced_reconnects; /* links replaced because they stalled */
    uint32_t unacked;           /* publishes outstanding on the current connection */
    uint32_t send_window;       /* publishes the broker takes unacknowledged (0: not connected) */
    uint64_t stalled_ms;        /* how long the link has made no progress (0: it does) */
    const char *last_error;     /* the last send failure other than "not connected", or "" */
    uint64_t last_error_age_s;  /* seconds since it (0 when none) */
};
void mqtt_link_info(const struct mqtt *m, struct mqtt_link_info *out);
/* Successful connections since creation. */
uint64_t mqtt_connects(const struct mqtt *m);

#endif
