/* SPDX-License-Identifier: MIT */
/*
 * mqtt: paho MQTTAsync behind an eventfd; see include/arborkv/mqtt.h.
 *
 * THREADING: functions named cb_* run on paho's threads and touch only the queue (under
 * m->lock) and the eventfd. Everything else runs on the event-loop thread.
 *
 * Publish acknowledgements: paho identifies a QoS 1 publish by its token, the MQTT packet id
 * (1..65535, reused once acknowledged). The loop keeps the caller's tag per token in
 * m->tags[token]; a callback may run before MQTTAsync_send returns, but its queue item is only
 * handled by the loop after the send call (and the table update) has finished.
 *
 * Liveness (docs/replication.md, "When the link stalls"): paho can report a connection that
 * carries nothing. A publish is only queued by MQTTAsync_send; paho's send thread writes it when
 * the client is connected, the socket has no pending write and fewer publishes than the broker's
 * Receive Maximum await their PUBACK; at most maxBufferedMessages publishes wait in that queue.
 * If acknowledgements stop, the queue fills and every send fails with "no more messages can be
 * buffered" while paho still says connected. So the loop measures the link by its effect: while
 * publishes are outstanding, an acknowledgement must arrive within stall_timeout, and a run of
 * refused sends must not last longer than that. A link that fails either test is reported as
 * stalled (after STALL_REPORT_US) and then thrown away: the client is destroyed (paho's queues
 * with it), a new one connects, and the caller publishes again whatever is unacknowledged.
 *
 * Send window: paho's send thread looks at its queue when a command is added or, failing that,
 * once a second; a PUBACK does not wake it. Publishes queued behind a full Receive Maximum
 * therefore wait up to a second each time the window empties unless a new publish arrives, which
 * made an outbox drain 20 messages a second against mosquitto. mqtt_send_room() tells a caller
 * how many publishes go on the wire at once, so the outbox never queues behind the window.
 */
#include "arborkv/mqtt.h"

#include <MQTTAsync.h>
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "arborkv/log.h"
#include "arborkv/loop.h"
#include "arborkv/mem.h"

#define RECONNECT_MIN_US      100000ULL /* first retry after 100 ms */
#define CONNECT_TIMEOUT_S     5         /* TCP + CONNACK */
#define TOKEN_SLOTS           65536     /* MQTT packet ids are 16-bit */
#define SUBS_MAX              16
#define SESSION_NEVER_EXPIRES 0xFFFFFFFFu /* MQTT 5 Session Expiry Interval: like 3.1.1's */
/* Publishes paho may hold in its command queue. paho's default (100) is below what the outbox
 * window alone puts there (max_inflight, up to 60,000, minus the broker's Receive Maximum), so
 * presence and anti-entropy messages were refused under load. 16-bit packet ids bound it anyway. */
#define MAX_BUFFERED     65535
#define STALL_REPORT_US  1000000ULL /* no progress this long: INFO says "stalled" */
#define STALL_DEFAULT_MS 5000
/* Publishes paho puts on the wire unacknowledged: its maxInflight default, and the cap of MQTT 5's
 * Receive Maximum (a broker that sends none allows 65535). */
#define SEND_WINDOW_MAX  65535u
#define ERR_LOG_EVERY_US 10000000ULL /* send failures are logged at most this often */

enum qtype {
    Q_CONNECTED,
    Q_CONNECT_FAILED,
    Q_LOST,
    Q_MESSAGE,
    Q_PUB_OK,
    Q_PUB_FAIL,
    Q_SUB_FAIL,
    Q_DISCONNECTED
};

/* Link liveness of the current connection; see the file comment. */
struct liveness {
    uint32_t outstanding; /* accepted publishes without PUBACK (or failure) */
    uint64_t progress_us; /* last PUBACK, or the send that made outstanding 1 */
    uint64_t refused_us;  /* first send refused since the last accepted one; 0: none */
    uint64_t check_timer; /* periodic check while connected */
};

struct qitem {
    struct qitem *next;
    enum qtype type;
    int token;        /* Q_PUB_*; Q_CONNECTED: the broker's Receive Maximum (0: none sent) */
    size_t len;       /* payload bytes (Q_MESSAGE) */
    char *topic;      /* Q_MESSAGE: NUL-terminated, inside this allocation */
    uint8_t *payload; /* Q_MESSAGE: inside this allocation */
    char why[160];    /* Q_CONNECT_FAILED, Q_LOST */
};

struct mqtt {
    struct loop *loop;
    MQTTAsync client;
    struct mqtt_handlers h;
    void *arg;
    int efd; /* eventfd: paho threads -> loop */
    char *uri, *client_id, *username, *password, *ca, *cert, *key, *will_topic, *will_payload;
    int keepalive_s, reconnect_max_s;
    uint64_t stall_us;
    uint32_t send_window; /* publishes paho sends without waiting for a PUBACK (connected) */
    bool v5;              /* MQTT 5 (the *5 callbacks and options), else 3.1.1 */
    char *subs[SUBS_MAX];
    bool sub_no_local[SUBS_MAX];
    size_t nsubs;

    enum mqtt_state state;
    bool connect_in_flight; /* MQTTAsync_connect issued, no answer yet */
    bool disconnecting;     /* MQTTAsync_disconnect issued, no answer yet */
    uint64_t watchdog;      /* fires if a connect never answers */
    uint64_t backoff_us;    /* next reconnect delay before jitter */
    uint64_t timer;         /* pending reconnect timer id, 0 if none */
    uint64_t connects;
    uint64_t forced_reconnects; /* links thrown away because they stalled */
    struct liveness live;
    char last_error[160]; /* the last send failure other than "not connected" */
    uint64_t last_error_us, last_error_log_us, errors_unlogged;
    uint64_t *tags;   /* tag per token (TOKEN_SLOTS) */
    uint8_t *tag_set; /* 1 when tags[token] belongs to an outstanding publish */

    pthread_mutex_t lock;   /* guards the fields below */
    pthread_cond_t drained; /* signalled when queued_bytes drops */
    struct qitem *head, *tail;
    size_t queued_bytes;
    bool closing; /* mqtt_free in progress: paho threads must not wait */
};

/* ---- paho threads ------------------------------------------------------------------------- */

static void push(struct mqtt *m, struct qitem *it)
{
    it->next = NULL;
    (void) pthread_mutex_lock(&m->lock);
    bool was_empty = !m->head;
    if (m->tail)
        m->tail->next = it;
    else
        m->head = it;
    m->tail = it;
    m->queued_bytes += it->len;
    (void) pthread_mutex_unlock(&m->lock);
    /* Only the push onto an empty queue wakes the loop: on_eventfd reads the eventfd before it
     * takes the whole queue, so items pushed onto a non-empty queue are taken with the first. */
    if (!was_empty) return;
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake anyway. */
    if (write(m->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_error("mqtt: eventfd write: %s", strerror(errno));
}

static struct qitem *item(enum qtype type)
{
    struct qitem *it = xcalloc(1, sizeof(*it));
    it->type = type;
    return it;
}

static void cb_connected(void *ctx, MQTTAsync_successData *resp)
{
    (void) resp;
    push(ctx, item(Q_CONNECTED));
}

static void cb_connect_failed(void *ctx, MQTTAsync_failureData *resp)
{
    struct qitem *it = item(Q_CONNECT_FAILED);
    if (resp && resp->message)
        (void) snprintf(it->why, sizeof(it->why), "%s", resp->message);
    else
        (void) snprintf(it->why, sizeof(it->why), "code %d", resp ? resp->code : -1);
    push(ctx, it);
}

static void cb_lost(void *ctx, char *cause)
{
    struct qitem *it = item(Q_LOST);
    (void) snprintf(it->why, sizeof(it->why), "%s", cause ? cause : "connection lost");
    if (cause) MQTTAsync_free(cause);
    push(ctx, it);
}

static int cb_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    struct mqtt *m = ctx;
    size_t tlen = topic_len > 0 ? (size_t) topic_len : strlen(topic);
    size_t plen = msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0;

    /* Backpressure: hold paho's receive thread while the loop has too much to do. */
    (void) pthread_mutex_lock(&m->lock);
    while (m->queued_bytes > MQTT_QUEUE_MAX_BYTES && !m->closing) {
        struct timespec until;
        (void) clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        (void) pthread_cond_timedwait(&m->drained, &m->lock, &until);
    }
    (void) pthread_mutex_unlock(&m->lock);

    struct qitem *it = xmalloc(sizeof(*it) + tlen + 1 + plen);
    memset(it, 0, sizeof(*it));
    it->type = Q_MESSAGE;
    it->topic = (char *) (it + 1);
    memcpy(it->topic, topic, tlen);
    it->topic[tlen] = '\0';
    it->payload = (uint8_t *) it->topic + tlen + 1;
    if (plen) memcpy(it->payload, msg->payload, plen);
    it->len = plen;
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    push(m, it);
    return 1; /* handled: paho acknowledges it */
}

static void cb_pub_ok(void *ctx, MQTTAsync_successData *resp)
{
    struct qitem *it = item(Q_PUB_OK);
    it->token = resp ? resp->token : -1;
    push(ctx, it);
}

static void cb_pub_failed(void *ctx, MQTTAsync_failureData *resp)
{
    struct qitem *it = item(Q_PUB_FAIL);
    it->token = resp ? resp->token : -1;
    if (resp && resp->message)
        (void) snprintf(it->why, sizeof(it->why), "%s", resp->message);
    else
        (void) snprintf(it->why, sizeof(it->why), "%s",
                        MQTTAsync_strerror(resp ? resp->code : MQTTASYNC_FAILURE));
    push(ctx, it);
}

/* MQTT 5 forms of the callbacks above (paho requires them with MQTTVERSION_5). */
static void cb_connected5(void *ctx, MQTTAsync_successData5 *resp)
{
    struct qitem *it = item(Q_CONNECTED);
    if (resp && MQTTProperties_hasProperty(&resp->properties, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM))
        it->token = MQTTProperties_getNumericValue(&resp->properties,
                                                   MQTTPROPERTY_CODE_RECEIVE_MAXIMUM);
    push(ctx, it);
}

static void cb_connect_failed5(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct qitem *it = item(Q_CONNECT_FAILED);
    if (resp && resp->message)
        (void) snprintf(it->why, sizeof(it->why), "%s", resp->message);
    else if (resp && resp->reasonCode)
        (void) snprintf(it->why, sizeof(it->why), "%s", MQTTReasonCode_toString(resp->reasonCode));
    else
        (void) snprintf(it->why, sizeof(it->why), "code %d", resp ? resp->code : -1);
    push(ctx, it);
}

static void cb_pub_ok5(void *ctx, MQTTAsync_successData5 *resp)
{
    struct qitem *it = item(Q_PUB_OK);
    it->token = resp ? resp->token : -1;
    /* A PUBACK with an error reason (0x80 and up) is a refusal, not a delivery. */
    if (resp && resp->reasonCode >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
        it->type = Q_PUB_FAIL;
        (void) snprintf(it->why, sizeof(it->why), "PUBACK %s",
                        MQTTReasonCode_toString(resp->reasonCode));
    }
    push(ctx, it);
}

static void cb_pub_failed5(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct qitem *it = item(Q_PUB_FAIL);
    it->token = resp ? resp->token : -1;
    if (resp && resp->message)
        (void) snprintf(it->why, sizeof(it->why), "%s", resp->message);
    else if (resp && resp->reasonCode)
        (void) snprintf(it->why, sizeof(it->why), "%s", MQTTReasonCode_toString(resp->reasonCode));
    else
        (void) snprintf(it->why, sizeof(it->why), "%s",
                        MQTTAsync_strerror(resp ? resp->code : MQTTASYNC_FAILURE));
    push(ctx, it);
}

static void cb_disconnected5(void *ctx, MQTTAsync_successData5 *resp)
{
    (void) resp;
    push(ctx, item(Q_DISCONNECTED));
}

static void cb_disconnect_failed5(void *ctx, MQTTAsync_failureData5 *resp)
{
    (void) resp;
    push(ctx, item(Q_DISCONNECTED));
}

static void cb_sub_failed5(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct qitem *it = item(Q_SUB_FAIL);
    (void) snprintf(it->why, sizeof(it->why), "%s",
                    resp && resp->reasonCode ? MQTTReasonCode_toString(resp->reasonCode)
                                             : "refused");
    push(ctx, it);
}

/* A SUBACK: with MQTT 5 a refused filter comes as an error reason code among the others. */
static void cb_sub_ok5(void *ctx, MQTTAsync_successData5 *resp)
{
    if (!resp) return;
    int n = resp->alt.sub.reasonCodeCount;
    const enum MQTTReasonCodes *codes = resp->alt.sub.reasonCodes;
    if (n <= 1) {
        if (resp->reasonCode < MQTTREASONCODE_UNSPECIFIED_ERROR) return;
        n = 0;
    }
    for (int i = 0; i < n && codes; i++)
        if (codes[i] >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
            struct qitem *it = item(Q_SUB_FAIL);
            (void) snprintf(it->why, sizeof(it->why), "%s", MQTTReasonCode_toString(codes[i]));
            push(ctx, it);
            return;
        }
    if (n == 0) {
        struct qitem *it = item(Q_SUB_FAIL);
        (void) snprintf(it->why, sizeof(it->why), "%s", MQTTReasonCode_toString(resp->reasonCode));
        push(ctx, it);
    }
}

static void cb_disconnected(void *ctx, MQTTAsync_successData *resp)
{
    (void) resp;
    push(ctx, item(Q_DISCONNECTED));
}

static void cb_disconnect_failed(void *ctx, MQTTAsync_failureData *resp)
{
    (void) resp;
    push(ctx, item(Q_DISCONNECTED));
}

static void cb_sub_failed(void *ctx, MQTTAsync_failureData *resp)
{
    struct qitem *it = item(Q_SUB_FAIL);
    (void) snprintf(it->why, sizeof(it->why), "code %d", resp ? resp->code : -1);
    push(ctx, it);
}

/* ---- loop thread -------------------------------------------------------------------------- */

static void schedule_reconnect(struct mqtt *m);
static int create_client(struct mqtt *m, MQTTAsync *out);
static void lost(struct mqtt *m, const char *why);

/* How long the link has made no progress: publishes outstanding without an acknowledgement, or
 * sends refused, whichever has lasted longer. 0 when neither. */
static uint64_t stalled_for(const struct mqtt *m, uint64_t now)
{
    uint64_t acks = m->live.outstanding ? now - m->live.progress_us : 0;
    uint64_t refused = m->live.refused_us ? now - m->live.refused_us : 0;
    return acks > refused ? acks : refused;
}

/* Forgets the liveness of a connection that is gone (or replaced). */
static void live_reset(struct mqtt *m)
{
    if (m->live.check_timer) loop_cancel_timer(m->loop, m->live.check_timer);
    m->live = (struct liveness){ 0 };
    memset(m->tag_set, 0, TOKEN_SLOTS);
}

/* Records a send failure (not "not connected") for INFO and logs it, rate-limited, at warn. */
static void send_failed(struct mqtt *m, const char *what, const char *why)
{
    uint64_t now = loop_now_us();
    (void) snprintf(m->last_error, sizeof(m->last_error), "%s: %s", what, why);
    m->last_error_us = now;
    if (m->last_error_log_us && now - m->last_error_log_us < ERR_LOG_EVERY_US) {
        m->errors_unlogged++;
        return;
    }
    if (m->errors_unlogged)
        log_warn("mqtt: %s: %s (and %llu more send failures since the last report)", what, why,
                 (unsigned long long) m->errors_unlogged);
    else
        log_warn("mqtt: %s: %s", what, why);
    m->last_error_log_us = now;
    m->errors_unlogged = 0;
}

static uint64_t check_every_us(const struct mqtt *m)
{
    uint64_t us = m->stall_us / 5;
    return us < 50000 ? 50000 : us > 1000000 ? 1000000 : us;
}

/* While connected: a link that made no progress for stall_us is thrown away (file comment). */
static void on_check(struct loop *l, void *arg)
{
    struct mqtt *m = arg;
    m->live.check_timer = 0;
    if (m->state != MQTT_CONNECTED) return;
    uint64_t stalled = stalled_for(m, loop_now_us());
    if (stalled < m->stall_us) {
        m->live.check_timer = loop_add_timer(l, check_every_us(m), on_check, m);
        return;
    }
    m->forced_reconnects++;
    log_warn("mqtt: the link to %s is stalled: no progress for %llu ms with %u publishes "
             "unacknowledged%s%s; reconnecting with a new client",
             m->uri, (unsigned long long) (stalled / 1000), m->live.outstanding,
             m->last_error[0] ? "; last send error: " : "", m->last_error);
    lost(m, "stalled");
}

/* A connect whose answer never came (paho lost it): give up on it and retry. */
static void on_watchdog(struct loop *l, void *arg)
{
    struct mqtt *m = arg;
    (void) l;
    m->watchdog = 0;
    if (!m->connect_in_flight) return;
    log_warn("mqtt: no answer to the connect to %s; retrying", m->uri);
    m->connect_in_flight = false;
    if (m->state == MQTT_CONNECTING) schedule_reconnect(m);
}

static void do_connect(struct mqtt *m)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    MQTTAsync_connectOptions co5 = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    MQTTProperties props = MQTTProperties_initializer;
    if (m->v5) {
        co = co5;
        co.cleanstart = 0; /* resume the session: QoS 1 messages queued while away */
        MQTTProperty expiry = { .identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL };
        expiry.value.integer4 = SESSION_NEVER_EXPIRES;
        if (MQTTProperties_add(&props, &expiry) != 0)
            log_warn("mqtt: cannot set the session expiry; the session ends at disconnect");
        co.connectProperties = &props;
        co.onSuccess5 = cb_connected5;
        co.onFailure5 = cb_connect_failed5;
    } else {
        co.cleansession = 0;
        co.onSuccess = cb_connected;
        co.onFailure = cb_connect_failed;
    }
    co.keepAliveInterval = m->keepalive_s;
    co.connectTimeout = CONNECT_TIMEOUT_S;
    co.automaticReconnect = 0;
    co.context = m;
    co.username = m->username;
    co.password = m->password;
    if (m->will_topic) {
        will.topicName = m->will_topic;
        will.message = m->will_payload;
        will.retained = 1;
        will.qos = 1;
        co.will = &will;
    }
    if (m->ca) {
        ssl.trustStore = m->ca;
        ssl.keyStore = m->cert;
        ssl.privateKey = m->key;
        ssl.enableServerCertAuth = 1;
        co.ssl = &ssl;
    }
    m->state = MQTT_CONNECTING;
    if (!m->client && create_client(m, &m->client) < 0) {
        schedule_reconnect(m);
        return;
    }
    int rc = MQTTAsync_connect(m->client, &co);
    MQTTProperties_free(&props); /* paho keeps its own copy */
    if (rc != MQTTASYNC_SUCCESS) {
        log_warn("mqtt: connect to %s: %s", m->uri, MQTTAsync_strerror(rc));
        schedule_reconnect(m);
        return;
    }
    m->connect_in_flight = true;
    if (m->watchdog) loop_cancel_timer(m->loop, m->watchdog);
    m->watchdog = loop_add_timer(m->loop, (CONNECT_TIMEOUT_S + 5) * 1000000ULL, on_watchdog, m);
}

static void on_timer(struct loop *l, void *arg)
{
    struct mqtt *m = arg;
    (void) l;
    m->timer = 0;
    if (m->state == MQTT_CONNECTING && !m->connect_in_flight && !m->disconnecting) do_connect(m);
}

static void schedule_reconnect(struct mqtt *m)
{
    if (m->state == MQTT_STOPPED || m->timer) return;
    m->state = MQTT_CONNECTING;
    uint64_t base = m->backoff_us ? m->backoff_us : RECONNECT_MIN_US;
    uint64_t cap = (uint64_t) m->reconnect_max_s * 1000000ULL;
    if (base > cap) base = cap;
    /* ±25% jitter so peers that lost the broker together do not return in lockstep. */
    uint64_t span = base / 2,
             delay = base - base / 4 +
                     (span ? randombytes_uniform((uint32_t) (span > UINT32_MAX ? UINT32_MAX : span))
                           : 0);
    m->backoff_us = base * 2 > cap ? cap : base * 2;
    m->timer = loop_add_timer(m->loop, delay, on_timer, m);
}

static void subscribe_all(struct mqtt *m)
{
    if (m->nsubs == 0) return;
    int qos[SUBS_MAX];
    MQTTSubscribe_options so[SUBS_MAX];
    for (size_t i = 0; i < m->nsubs; i++) {
        qos[i] = 1;
        so[i] = (MQTTSubscribe_options) MQTTSubscribe_options_initializer;
        so[i].noLocal = m->sub_no_local[i] ? 1 : 0;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    if (m->v5) {
        ro.onSuccess5 = cb_sub_ok5;
        ro.onFailure5 = cb_sub_failed5;
        ro.subscribeOptionsCount = (int) m->nsubs;
        ro.subscribeOptionsList = so;
    } else {
        ro.onFailure = cb_sub_failed;
    }
    ro.context = m;
    int rc = MQTTAsync_subscribeMany(m->client, (int) m->nsubs, m->subs, qos, &ro);
    if (rc != MQTTASYNC_SUCCESS) log_warn("mqtt: subscribe: %s", MQTTAsync_strerror(rc));
}

/*
 * Replaces the client by a new one, which holds none of the old one's state. The new one is
 * created first: destroying paho's last client stops its threads, and that wait would block the
 * loop. Destroying a connected client sends DISCONNECT when it can and closes the socket.
 */
static void renew_client(struct mqtt *m)
{
    MQTTAsync fresh = NULL;
    if (create_client(m, &fresh) < 0) log_error("mqtt: cannot renew the client; retrying");
    if (m->client) MQTTAsync_destroy(&m->client);
    m->client = fresh;
}

static void lost(struct mqtt *m, const char *why)
{
    bool was_connected = m->state == MQTT_CONNECTED;
    m->connect_in_flight = false;
    live_reset(m);
    /*
     * A new client for the next connection: paho 1.3.12 retransmits the publishes that were in
     * flight when a connection died, and after a connection stalled mid-write (a peer that stops
     * reading) their topic had been freed: the broker got a garbage topic, disconnected us as
     * "malformed", and every reconnect repeated it. A stalled link (on_check) must lose paho's
     * queues too. We need none of paho's state: the outbox publishes every unacknowledged event
     * again (repl.c), anti-entropy starts its sessions over, and presence is published at each
     * connect.
     */
    if (was_connected) renew_client(m);
    if (m->state == MQTT_STOPPED) return;
    m->state = MQTT_CONNECTING;
    schedule_reconnect(m);
    if (was_connected && m->h.on_disconnect) m->h.on_disconnect(m->arg, why);
}

static void handle(struct mqtt *m, struct qitem *it)
{
    switch (it->type) {
    case Q_CONNECTED:
        m->connect_in_flight = false;
        if (m->watchdog) loop_cancel_timer(m->loop, m->watchdog);
        m->watchdog = 0;
        if (m->state != MQTT_CONNECTING) break; /* stopped meanwhile */
        m->state = MQTT_CONNECTED;
        m->backoff_us = 0;
        m->connects++;
        m->send_window = it->token > 0 && (uint32_t) it->token < SEND_WINDOW_MAX
                                 ? (uint32_t) it->token
                                 : SEND_WINDOW_MAX;
        log_info("mqtt: connected to %s as %s", m->uri, m->client_id);
        if (m->send_window < SEND_WINDOW_MAX)
            log_debug("mqtt: the broker's Receive Maximum is %u", (unsigned) m->send_window);
        live_reset(m);
        m->live.check_timer = loop_add_timer(m->loop, check_every_us(m), on_check, m);
        subscribe_all(m);
        if (m->h.on_connect) m->h.on_connect(m->arg);
        break;
    case Q_CONNECT_FAILED:
        m->connect_in_flight = false;
        if (m->watchdog) loop_cancel_timer(m->loop, m->watchdog);
        m->watchdog = 0;
        if (m->state == MQTT_STOPPED) break;
        if (m->connects == 0 || m->backoff_us >= (uint64_t) m->reconnect_max_s * 1000000ULL)
            log_debug("mqtt: cannot connect to %s: %s", m->uri, it->why);
        lost(m, it->why);
        break;
    case Q_LOST:
        if (m->state == MQTT_CONNECTED)
            log_warn("mqtt: connection to %s lost: %s", m->uri, it->why);
        lost(m, it->why);
        break;
    case Q_MESSAGE:
        if (m->h.on_message) m->h.on_message(m->arg, it->topic, it->payload, it->len);
        break;
    case Q_PUB_OK:
    case Q_PUB_FAIL:
        if (it->token > 0 && it->token < TOKEN_SLOTS && m->tag_set[it->token]) {
            m->tag_set[it->token] = 0;
            m->live.outstanding--;
            m->live.progress_us = loop_now_us();
            if (it->type == Q_PUB_FAIL) send_failed(m, "publish failed", it->why);
            if (m->h.on_published)
                m->h.on_published(m->arg, m->tags[it->token], it->type == Q_PUB_OK);
        }
        break;
    case Q_DISCONNECTED:
        m->disconnecting = false;
        /* REPLICATE enable right after disable: connect once the disconnect is through. */
        if (m->state == MQTT_CONNECTING && !m->connect_in_flight && !m->timer) do_connect(m);
        break;
    case Q_SUB_FAIL:
        log_warn("mqtt: subscribe refused (%s); reconnecting", it->why);
        if (m->state == MQTT_CONNECTED) {
            MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
            MQTTAsync_disconnectOptions d5 = MQTTAsync_disconnectOptions_initializer5;
            if (m->v5) d = d5;
            d.timeout = 100;
            (void) MQTTAsync_disconnect(m->client, &d);
            lost(m, "subscribe refused");
        }
        break;
    }
}

/* Takes everything queued; wakes paho's receive thread if it waits for room. */
static struct qitem *take_all(struct mqtt *m)
{
    (void) pthread_mutex_lock(&m->lock);
    struct qitem *list = m->head;
    m->head = m->tail = NULL;
    m->queued_bytes = 0;
    (void) pthread_cond_broadcast(&m->drained);
    (void) pthread_mutex_unlock(&m->lock);
    return list;
}

static void on_eventfd(struct loop *l, int fd, unsigned events, void *arg)
{
    struct mqtt *m = arg;
    uint64_t n;
    (void) l;
    (void) events;
    if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_warn("mqtt: eventfd read: %s", strerror(errno));
    for (struct qitem *it = take_all(m), *next; it; it = next) {
        next = it->next;
        handle(m, it);
        free(it);
    }
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

int mqtt_new(struct mqtt **out, struct loop *l, const struct mqtt_opts *o,
             const struct mqtt_handlers *h, void *arg)
{
    struct mqtt *m = xcalloc(1, sizeof(*m));
    m->loop = l;
    m->h = *h;
    m->arg = arg;
    m->efd = -1;
    (void) pthread_mutex_init(&m->lock, NULL);
    (void) pthread_cond_init(&m->drained, NULL);
    m->client_id = xstrdup(o->client_id);
    m->username = dup_or_null(o->username);
    m->password = dup_or_null(o->password);
    m->ca = dup_or_null(o->tls_ca_file);
    m->cert = dup_or_null(o->tls_cert_file);
    m->key = dup_or_null(o->tls_key_file);
    m->will_topic = dup_or_null(o->will_topic);
    m->will_payload = dup_or_null(o->will_payload);
    m->keepalive_s = o->keepalive_s > 0 ? o->keepalive_s : 30;
    m->v5 = o->version != 3;
    m->reconnect_max_s = o->reconnect_max_s > 0 ? o->reconnect_max_s : 30;
    m->stall_us =
            (uint64_t) (o->stall_timeout_ms > 0 ? o->stall_timeout_ms : STALL_DEFAULT_MS) * 1000ULL;
    m->tags = xcalloc(TOKEN_SLOTS, sizeof(*m->tags));
    m->tag_set = xcalloc(TOKEN_SLOTS, 1);
    size_t ulen = strlen(o->host) + 32;
    m->uri = xmalloc(ulen);
    (void) snprintf(m->uri, ulen, "%s://%s:%d", m->ca ? "ssl" : "tcp", o->host, o->port);

    m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (m->efd < 0) {
        int err = errno;
        log_error("mqtt: eventfd: %s", strerror(err));
        mqtt_free(m, 0);
        return -err;
    }
    int rc = loop_add_fd(l, m->efd, LOOP_READ, on_eventfd, m);
    if (rc < 0) {
        log_error("mqtt: epoll: %s", strerror(-rc));
        mqtt_free(m, 0);
        return rc;
    }
    rc = create_client(m, &m->client);
    if (rc < 0) {
        mqtt_free(m, 0);
        return rc;
    }
    *out = m;
    return 0;
}

/* Creates a client into *out (NULL on failure). Returns 0 or -EINVAL (logged). */
static int create_client(struct mqtt *m, MQTTAsync *out)
{
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    MQTTAsync_createOptions co5 = MQTTAsync_createOptions_initializer5;
    if (m->v5) co = co5;
    co.sendWhileDisconnected = 0;
    co.maxBufferedMessages = MAX_BUFFERED;
    int rc = MQTTAsync_createWithOptions(out, m->uri, m->client_id, MQTTCLIENT_PERSISTENCE_NONE,
                                         NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        log_error("mqtt: cannot create a client for %s: %s", m->uri, MQTTAsync_strerror(rc));
        *out = NULL;
        return -EINVAL;
    }
    rc = MQTTAsync_setCallbacks(*out, m, cb_lost, cb_message, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        log_error("mqtt: setCallbacks: %s", MQTTAsync_strerror(rc));
        MQTTAsync_destroy(out);
        return -EINVAL;
    }
    return 0;
}

void mqtt_start(struct mqtt *m)
{
    if (m->state != MQTT_STOPPED) return;
    m->state = MQTT_CONNECTING;
    m->backoff_us = 0;
    if (!m->connect_in_flight && !m->disconnecting) do_connect(m);
}

void mqtt_stop(struct mqtt *m, int timeout_ms)
{
    if (m->state == MQTT_STOPPED) return;
    bool was_connected = m->state == MQTT_CONNECTED;
    m->state = MQTT_STOPPED;
    if (m->timer) {
        loop_cancel_timer(m->loop, m->timer);
        m->timer = 0;
    }
    if (m->client && (was_connected || m->connect_in_flight)) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        MQTTAsync_disconnectOptions d5 = MQTTAsync_disconnectOptions_initializer5;
        if (m->v5) {
            d = d5; /* reason 0, normal disconnection: the broker drops the last will */
            d.onSuccess5 = cb_disconnected5;
            d.onFailure5 = cb_disconnect_failed5;
        } else {
            d.onSuccess = cb_disconnected;
            d.onFailure = cb_disconnect_failed;
        }
        d.timeout = timeout_ms;
        d.context = m;
        if (MQTTAsync_disconnect(m->client, &d) == MQTTASYNC_SUCCESS) m->disconnecting = true;
        m->connect_in_flight = false;
    }
    live_reset(m);
    if (was_connected && m->h.on_disconnect) m->h.on_disconnect(m->arg, "stopped");
}

void mqtt_free(struct mqtt *m, int timeout_ms)
{
    if (!m) return;
    (void) pthread_mutex_lock(&m->lock);
    m->closing = true;
    (void) pthread_cond_broadcast(&m->drained);
    (void) pthread_mutex_unlock(&m->lock);
    if (m->client) {
        if (m->state != MQTT_STOPPED || m->connect_in_flight) {
            m->h.on_disconnect = NULL;
            mqtt_stop(m, timeout_ms);
            /* Give paho the disconnect time to flush (the offline presence) and to answer
             * it before destroy, so no callback of this client runs afterwards. */
            for (int waited = 0; waited < timeout_ms && m->disconnecting; waited += 10) {
                (void) usleep(10000);
                (void) pthread_mutex_lock(&m->lock);
                for (struct qitem *it = m->head; it; it = it->next)
                    if (it->type == Q_DISCONNECTED) m->disconnecting = false;
                (void) pthread_mutex_unlock(&m->lock);
            }
        }
        MQTTAsync_destroy(&m->client);
    }
    if (m->timer) loop_cancel_timer(m->loop, m->timer);
    if (m->watchdog) loop_cancel_timer(m->loop, m->watchdog);
    if (m->live.check_timer) loop_cancel_timer(m->loop, m->live.check_timer);
    if (m->efd >= 0) {
        loop_del_fd(m->loop, m->efd);
        (void) close(m->efd);
    }
    for (struct qitem *it = take_all(m), *next; it; it = next) {
        next = it->next;
        free(it);
    }
    for (size_t i = 0; i < m->nsubs; i++)
        free(m->subs[i]);
    free(m->uri);
    free(m->client_id);
    free(m->username);
    free(m->password);
    free(m->ca);
    free(m->cert);
    free(m->key);
    free(m->will_topic);
    free(m->will_payload);
    free(m->tags);
    free(m->tag_set);
    (void) pthread_cond_destroy(&m->drained);
    (void) pthread_mutex_destroy(&m->lock);
    free(m);
}

int mqtt_subscribe(struct mqtt *m, const char *filter, bool no_local)
{
    assert(m && filter && *filter);
    if (m->nsubs == SUBS_MAX) return -ENOSPC;
    m->sub_no_local[m->nsubs] = no_local;
    m->subs[m->nsubs++] = xstrdup(filter);
    if (m->state == MQTT_CONNECTED) subscribe_all(m);
    return 0;
}

int mqtt_publish(struct mqtt *m, const char *topic, const void *payload, size_t len, int qos,
                 bool retain, uint64_t tag)
{
    assert(m && topic && *topic && (payload || len == 0) && qos >= 0 && qos <= 2);
    if (m->state != MQTT_CONNECTED) return -ENOTCONN;
    if (len > (size_t) INT32_MAX) return -EMSGSIZE;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    if (m->v5) {
        ro.onSuccess5 = cb_pub_ok5;
        ro.onFailure5 = cb_pub_failed5;
    } else {
        ro.onSuccess = cb_pub_ok;
        ro.onFailure = cb_pub_failed;
    }
    ro.context = m;
    int rc = MQTTAsync_send(m->client, topic, (int) len, payload, qos, retain ? 1 : 0, &ro);
    if (rc == MQTTASYNC_DISCONNECTED) return -ENOTCONN; /* lost; the loop hears of it next */
    if (rc != MQTTASYNC_SUCCESS) {
        if (!m->live.refused_us) m->live.refused_us = loop_now_us();
        send_failed(m, "publish refused by the client library", MQTTAsync_strerror(rc));
        return -EIO;
    }
    m->live.refused_us = 0;
    if (ro.token > 0 && ro.token < TOKEN_SLOTS && !m->tag_set[ro.token]) {
        m->tags[ro.token] = tag;
        m->tag_set[ro.token] = 1;
        if (m->live.outstanding++ == 0) m->live.progress_us = loop_now_us();
    }
    return 0;
}

enum mqtt_state mqtt_state(const struct mqtt *m)
{
    if (m->state == MQTT_CONNECTED) {
        uint64_t report = m->stall_us < STALL_REPORT_US ? m->stall_us : STALL_REPORT_US;
        if (stalled_for(m, loop_now_us()) >= report) return MQTT_STALLED;
    }
    return m->state;
}

bool mqtt_is_up(const struct mqtt *m)
{
    return m->state == MQTT_CONNECTED;
}

uint32_t mqtt_send_room(const struct mqtt *m)
{
    if (m->state != MQTT_CONNECTED) return 0;
    return m->live.outstanding < m->send_window ? m->send_window - m->live.outstanding : 0;
}

void mqtt_link_info(const struct mqtt *m, struct mqtt_link_info *out)
{
    uint64_t now = loop_now_us();
    out->forced_reconnects = m->forced_reconnects;
    out->unacked = m->state == MQTT_CONNECTED ? m->live.outstanding : 0;
    out->send_window = m->state == MQTT_CONNECTED ? m->send_window : 0;
    out->stalled_ms = m->state == MQTT_CONNECTED ? stalled_for(m, now) / 1000 : 0;
    out->last_error = m->last_error;
    out->last_error_age_s = m->last_error_us ? (now - m->last_error_us) / 1000000 : 0;
}

const char *mqtt_state_name(enum mqtt_state s)
{
    switch (s) {
    case MQTT_STOPPED:
        return "disabled";
    case MQTT_CONNECTING:
        return "connecting";
    case MQTT_CONNECTED:
        return "connected";
    case MQTT_STALLED:
        return "stalled";
    }
    return "?";
}

bool mqtt_no_local(const struct mqtt *m)
{
    return m->v5;
}

uint64_t mqtt_connects(const struct mqtt *m)
{
    return m->connects;
}
