/* SPDX-License-Identifier: MIT */
/*
 * repl: replication over MQTT; see include/arborkv/repl.h and docs/replication.md.
 *
 * Outbox window: `inflight` holds the outbox ids published on the current connection and not
 * acknowledged yet (at most max_inflight, and never more than the broker's send window allows:
 * mqtt_send_room); `last_sent` is the largest id published on it. A
 * disconnect forgets both, so everything still in the outbox is published again after the next
 * connect (at-least-once; LWW makes repeats harmless).
 */
#include "arborkv/repl.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "config.h"

#include "arborkv/hlc.h"
#include "arborkv/kv_apply.h"
#include "arborkv/log.h"
#include "arborkv/loop.h"
#include "arborkv/mem.h"
#include "arborkv/merkle.h"
#include "arborkv/mqtt.h"
#include "arborkv/store.h"

#define PRESENCE_EVERY_US   (10ULL * 1000000ULL) /* presence refresh while connected */
#define DISCONNECT_WAIT_MS  300
#define REPL_MAX_PEERS      4096   /* presence entries tracked (bounded memory) */
#define ACK_DELETE_DELAY_US 100000 /* acknowledged outbox rows wait this long for a write turn */
/* Room in the broker's send window kept for presence and anti-entropy when the outbox has
 * messages in flight (mqtt_send_room). */
#define CONTROL_RESERVE 2

struct inflight {
    uint64_t id;
    uint32_t nevents;
};

struct peer {
    char *name;
    bool online;
};

struct repl {
    struct loop *loop; /* [borrow] the handles of repl_env */
    struct store *store;
    struct merkle *tree;
    struct hlc *hlc;
    const char *node_id;
    struct mqtt *mqtt;
    struct repl_opts o; /* strings point into the copies below */
    char *prefix, *addr, *events_topic, *presence_topic, *sub_events, *sub_nodes;
    struct repl_listener listener; /* the module on {prefix}/{suffix}/{node_id} (anti-entropy) */
    char *listen_prefix;           /* "{prefix}/{suffix}/", NULL without a listener */
    char *sub_listener;            /* its subscription */
    bool enabled;                  /* REPLICATE enable/disable; link started */
    bool recording;                /* local changes go to the outbox */

    /* this turn's changes, encoded */
    struct buf body;  /* events of the message being filled */
    size_t body_n;    /* events in body */
    struct buf *msgs; /* finished messages of this turn (payloads) */
    uint32_t *msg_n;  /* events per finished message */
    uint64_t *msg_id; /* their outbox ids once stored (0: not stored, the outbox was full) */
    size_t nmsgs, msgs_cap;
    /* After a commit, until the next turn records: msgs[0..nfresh) are committed outbox rows
     * msg_id[..], which repl_pump publishes from memory instead of reading them back. */
    size_t nfresh, fresh_next;
    uint64_t turn_events; /* events recorded this turn */
    uint64_t turn_added;  /* events stored in the outbox this turn (before commit) */
    uint64_t turn_rows;   /* outbox rows added this turn (before commit) */

    /* outbox */
    uint64_t outbox_events; /* events in the outbox (committed) */
    uint64_t outbox_rows;
    struct inflight *inflight;
    size_t ninflight;
    uint64_t last_sent;
    uint64_t *acked; /* acknowledged outbox ids whose rows are not deleted yet */
    size_t nacked, acked_cap, acked_in_turn;
    uint64_t ack_timer; /* deletes the acknowledged rows when no write turn comes */

    struct codec_batch batch; /* decode scratch */
    struct buf scratch;       /* presence payloads */
    struct peer *peers;
    size_t npeers;
    uint64_t presence_timer;

    struct {
        uint64_t published, applied, duplicate, rejected, own, malformed, dropped;
    } stats;
};

static bool log_allowed(uint64_t *last_us)
{
    uint64_t now = loop_now_us();
    if (*last_us && now - *last_us < 1000000) return false;
    *last_us = now;
    return true;
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = xmalloc(n);
    (void) snprintf(s, n, "%s%s", a, b);
    return s;
}

/* ---- presence ------------------------------------------------------------------------------ */

static void json_str(struct buf *b, const char *s)
{
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char) *s;
        if (ch == '"' || ch == '\\') {
            buf_append(b, "\\", 1);
            buf_append(b, s, 1);
        } else if (ch < 0x20) {
            buf_printf(b, "\\u%04x", ch);
        } else {
            buf_append(b, s, 1);
        }
    }
    buf_append(b, "\"", 1);
}

static void presence_json(struct repl *r, struct buf *b, bool online)
{
    buf_reset(b);
    buf_append_str(b, "{\"node\":");
    json_str(b, r->node_id);
    buf_printf(b, ",\"status\":\"%s\",\"addr\":", online ? "online" : "offline");
    json_str(b, r->addr);
    char hex[2 * MERKLE_DIGEST_LEN + 1] = "";
    if (r->tree) {
        uint8_t root[MERKLE_DIGEST_LEN];
        merkle_root(r->tree, root);
        (void) sodium_bin2hex(hex, sizeof(hex), root, sizeof(root));
    }
    buf_printf(b, ",\"keys\":%llu,\"root\":\"%s\",\"version\":\"%s\",\"ts\":%llu}",
               (unsigned long long) store_live_count(r->store), hex, ARBORKV_VERSION,
               (unsigned long long) (hlc_wall_ns() / 1000000000ULL));
}

static void publish_presence(struct repl *r)
{
    presence_json(r, &r->scratch, true);
    /* A refusal is logged by the mqtt layer; the next refresh tries again. */
    (void) mqtt_publish(r->mqtt, r->presence_topic, r->scratch.data, r->scratch.len, 1, true, 0);
}

static void presence_tick(struct loop *l, void *arg)
{
    struct repl *r = arg;
    r->presence_timer = 0;
    if (!mqtt_is_up(r->mqtt)) return;
    publish_presence(r);
    r->presence_timer = loop_add_timer(l, PRESENCE_EVERY_US, presence_tick, r);
}

static void on_presence(struct repl *r, const char *name, const uint8_t *p, size_t len)
{
    if (!strcmp(name, r->node_id) || !*name || strchr(name, '/')) return;
    /* Online iff the JSON says "status": "online" (any spacing). An empty retained message (a
     * cleared topic) or anything else means not online. */
    bool online = false;
    static const char key[] = "\"status\"";
    for (size_t i = 0; !online && len >= sizeof(key) - 1 && i <= len - (sizeof(key) - 1); i++) {
        if (memcmp(p + i, key, sizeof(key) - 1) != 0) continue;
        size_t j = i + sizeof(key) - 1;
        while (j < len && (p[j] == ' ' || p[j] == '\t' || p[j] == '\n' || p[j] == '\r'))
            j++;
        if (j >= len || p[j] != ':') continue;
        j++;
        while (j < len && (p[j] == ' ' || p[j] == '\t' || p[j] == '\n' || p[j] == '\r'))
            j++;
        online = len - j >= 8 && !memcmp(p + j, "\"online\"", 8);
    }
    for (size_t i = 0; i < r->npeers; i++)
        if (!strcmp(r->peers[i].name, name)) {
            r->peers[i].online = online;
            return;
        }
    if (!online) return;
    if (r->npeers >= REPL_MAX_PEERS) {
        static uint64_t last_log;
        if (log_allowed(&last_log))
            log_warn("repl: more than %d nodes announce presence; ignoring '%s'", REPL_MAX_PEERS,
                     name);
        return;
    }
    r->peers = xrealloc(r->peers, (r->npeers + 1) * sizeof(*r->peers));
    r->peers[r->npeers++] = (struct peer){ xstrdup(name), true };
}

/* ---- outgoing ----------------------------------------------------------------------------- */

/* Closes the message being filled: array header (unless a single MerkleKV event) + body. */
static void finish_message(struct repl *r)
{
    if (r->body_n == 0) return;
    if (r->nmsgs == r->msgs_cap) {
        r->msgs_cap = r->msgs_cap ? r->msgs_cap * 2 : 4;
        r->msgs = xrealloc(r->msgs, r->msgs_cap * sizeof(*r->msgs));
        r->msg_n = xrealloc(r->msg_n, r->msgs_cap * sizeof(*r->msg_n));
        r->msg_id = xrealloc(r->msg_id, r->msgs_cap * sizeof(*r->msg_id));
        for (size_t i = r->nmsgs; i < r->msgs_cap; i++)
            buf_init(&r->msgs[i]);
    }
    struct buf *m = &r->msgs[r->nmsgs];
    buf_reset(m);
    if (!r->o.wire_merklekv) codec_encode_batch_header(m, r->body_n);
    buf_append(m, r->body.data, r->body.len);
    r->msg_n[r->nmsgs++] = (uint32_t) r->body_n;
    buf_reset(&r->body);
    r->body_n = 0;
}

void repl_record(struct repl *r, enum codec_op op, const struct store_rec *rec)
{
    assert(!r || (rec && rec->key_len > 0));
    if (!r || !r->recording) return;
    r->nfresh = 0; /* msgs[] is this turn's again */
    struct codec_event ev = {
        .op = op,
        .key = rec->key,
        .key_len = rec->key_len,
        .val = rec->tombstone ? NULL : rec->value,
        .val_len = rec->tombstone ? 0 : rec->value_len,
        .has_val = !rec->tombstone,
        .ts = rec->ts,
        .src = r->node_id,
        .src_len = strlen(r->node_id),
    };
    memcpy(ev.op_id, rec->op_id, CODEC_OP_ID_LEN);
    codec_encode_event(&r->body, &ev, r->o.wire_merklekv ? CODEC_WIRE_MERKLEKV : CODEC_WIRE_CBOR);
    r->body_n++;
    r->turn_events++;
    if (r->o.wire_merklekv || r->body_n >= r->o.batch_max_events) finish_message(r);
}

static void forget_turn(struct repl *r)
{
    buf_reset(&r->body);
    r->body_n = 0;
    r->nmsgs = 0;
    r->turn_events = 0;
    r->turn_added = 0;
    r->turn_rows = 0;
}

int repl_before_commit(struct repl *r)
{
    if (!r) return 0;
    finish_message(r);
    r->turn_added = 0;
    r->turn_rows = 0;
    r->acked_in_turn = r->nacked;
    for (size_t i = 0; i < r->acked_in_turn; i++) {
        int rc = store_outbox_delete(r->store, r->acked[i]);
        if (rc < 0) return rc;
    }
    for (size_t i = 0; i < r->nmsgs; i++) {
        r->msg_id[i] = 0;
        if (r->outbox_events + r->turn_added + r->msg_n[i] > r->o.outbox_max_events) {
            static uint64_t last_log;
            r->stats.dropped += r->msg_n[i];
            if (log_allowed(&last_log))
                log_warn("repl: outbox full (%llu events): new events are not queued; peers "
                         "will get these changes through anti-entropy",
                         (unsigned long long) r->outbox_events);
            continue;
        }
        int rc = store_outbox_add(r->store, r->msgs[i].data, r->msgs[i].len, r->msg_n[i],
                                  &r->msg_id[i]);
        if (rc < 0) return rc;
        r->turn_added += r->msg_n[i];
        r->turn_rows++;
    }
    return 0;
}

void repl_after_commit(struct repl *r, bool committed)
{
    if (!r) return;
    if (committed) {
        r->outbox_events += r->turn_added;
        r->outbox_rows += r->turn_rows;
        /* Deleted for good: drop them from the list (acks of this turn came after). */
        if (r->acked_in_turn) {
            memmove(r->acked, r->acked + r->acked_in_turn,
                    (r->nacked - r->acked_in_turn) * sizeof(*r->acked));
            r->nacked -= r->acked_in_turn;
        }
    } /* else the rows were rolled back with the writes they describe; deletes are retried */
    r->acked_in_turn = 0;
    r->nfresh = committed ? r->nmsgs : 0;
    r->fresh_next = 0;
    forget_turn(r);
}

static bool is_acked(const struct repl *r, uint64_t id)
{
    for (size_t i = 0; i < r->nacked; i++)
        if (r->acked[i] == id) return true;
    return false;
}

void repl_pump(struct repl *r)
{
    if (!r || !r->enabled || !mqtt_is_up(r->mqtt)) return;
    if (store_in_txn(r->store)) return; /* uncommitted rows must not leave */
    assert(r->ninflight <= r->o.max_inflight && r->fresh_next <= r->nfresh);
    while (r->ninflight < r->o.max_inflight) {
        /* Never more than the broker takes at once: paho would hold the rest up to a second. */
        uint32_t room = mqtt_send_room(r->mqtt);
        if (room == 0 || (room <= CONTROL_RESERVE && r->ninflight > 0)) break;
        uint64_t id;
        uint32_t nev;
        const uint8_t *p;
        size_t len;
        while (r->fresh_next < r->nfresh && r->msg_id[r->fresh_next] <= r->last_sent)
            r->fresh_next++; /* not stored, or published already */
        /* A fresh row with id last_sent + 1 is the next row: no id lies in between. */
        size_t k = r->fresh_next;
        if (k < r->nfresh && r->msg_id[k] == r->last_sent + 1) {
            id = r->msg_id[k];
            nev = r->msg_n[k];
            p = r->msgs[k].data;
            len = r->msgs[k].len;
            r->fresh_next++;
        } else if (store_outbox_next(r->store, r->last_sent, &id, &nev, &p, &len) <= 0) {
            break;
        }
        if (is_acked(r, id)) { /* acknowledged, delete pending: not again */
            r->last_sent = id;
            continue;
        }
        int rc = mqtt_publish(r->mqtt, r->events_topic, p, len, 1, false, id);
        if (rc < 0) break; /* not connected any more, or paho's queue refuses: retry later */
        r->inflight[r->ninflight++] = (struct inflight){ id, nev };
        r->last_sent = id;
    }
}

/* No write turn came to carry the deletes of acknowledged rows: open a transaction for them;
 * the group commit (repl_before_commit) does the deletes. */
static void ack_tick(struct loop *l, void *arg)
{
    struct repl *r = arg;
    (void) l;
    r->ack_timer = 0;
    if (r->nacked) (void) store_begin(r->store); /* a failure fails the turn (store.h) */
}

static void on_published(void *arg, uint64_t tag, bool ok)
{
    struct repl *r = arg;
    if (tag == 0) return; /* presence */
    size_t i = 0;
    while (i < r->ninflight && r->inflight[i].id != tag)
        i++;
    if (i == r->ninflight) return; /* from an earlier connection: republished since */
    struct inflight f = r->inflight[i];
    r->inflight[i] = r->inflight[--r->ninflight];
    if (!ok) {
        /* Publish everything unacknowledged again, oldest first (repeats are harmless). */
        r->ninflight = 0;
        r->last_sent = 0;
        return;
    }
    /* The row goes with the next write turn's transaction (or a timer's), not in a commit of
     * its own: one commit per write instead of ~1.4 (docs/benchmarks.md). */
    if (r->nacked == r->acked_cap) {
        r->acked_cap = r->acked_cap ? r->acked_cap * 2 : 64;
        r->acked = xrealloc(r->acked, r->acked_cap * sizeof(*r->acked));
    }
    r->acked[r->nacked++] = f.id;
    r->outbox_rows -= r->outbox_rows ? 1 : 0;
    r->outbox_events -= f.nevents < r->outbox_events ? f.nevents : r->outbox_events;
    r->stats.published += f.nevents;
    if (!r->ack_timer) r->ack_timer = loop_add_timer(r->loop, ACK_DELETE_DELAY_US, ack_tick, r);
}

/* ---- incoming ----------------------------------------------------------------------------- */

static void apply_event(struct repl *r, const struct codec_event *ev)
{
    if (ev->src_len == strlen(r->node_id) && !memcmp(ev->src, r->node_id, ev->src_len)) {
        r->stats.own++;
        return;
    }
    struct store_rec in = { .key = ev->key,
                            .key_len = ev->key_len,
                            .value = ev->val,
                            .value_len = ev->has_val ? ev->val_len : 0,
                            .tombstone = !ev->has_val,
                            .ts = ev->ts };
    memcpy(in.op_id, ev->op_id, STORE_OP_ID_BYTES);
    int rc = kv_apply_remote(r->hlc, r->store, &in);
    if (rc < 0) return; /* the turn has failed (store.h) */
    if (rc == KV_SAME) {
        r->stats.duplicate++;
        return;
    }
    if (rc == KV_OLDER || rc == KV_PURGED) {
        r->stats.rejected++;
        return;
    }
    r->stats.applied++;
}

static void on_message(void *arg, const char *topic, const uint8_t *payload, size_t len)
{
    struct repl *r = arg;
    size_t plen = strlen(r->prefix);
    if (strncmp(topic, r->prefix, plen) != 0 || topic[plen] != '/') return;
    const char *rest = topic + plen + 1;
    if (!strncmp(rest, "nodes/", 6)) {
        on_presence(r, rest + 6, payload, len);
        return;
    }
    if (r->listen_prefix && !strncmp(topic, r->listen_prefix, strlen(r->listen_prefix))) {
        if (!strcmp(topic + strlen(r->listen_prefix), r->node_id))
            r->listener.on_message(r->listener.arg, payload, len);
        return;
    }
    if (strncmp(rest, "events", 6) != 0 || (rest[6] != '\0' && rest[6] != '/')) return;
    char why[160];
    if (codec_decode(payload, len, &r->batch, why, sizeof(why)) < 0) {
        static uint64_t last_log;
        r->stats.malformed++;
        if (log_allowed(&last_log))
            log_warn("repl: dropped a malformed event message on %s (%zu bytes): %s", topic, len,
                     why);
        return;
    }
    for (size_t i = 0; i < r->batch.n; i++)
        apply_event(r, &r->batch.ev[i]);
}

/* ---- link --------------------------------------------------------------------------------- */

static void on_connect(void *arg)
{
    struct repl *r = arg;
    r->ninflight = 0;
    r->last_sent = 0;
    publish_presence(r);
    if (!r->presence_timer)
        r->presence_timer = loop_add_timer(r->loop, PRESENCE_EVERY_US, presence_tick, r);
    repl_pump(r);
    /* What the broker acknowledged but never delivered (it crashed, or lost its sessions) is
     * repaired by anti-entropy: a round follows every connect (docs/replication.md). */
    if (r->listener.on_link_up) r->listener.on_link_up(r->listener.arg);
}

static void on_disconnect(void *arg, const char *why)
{
    struct repl *r = arg;
    (void) why;
    r->ninflight = 0;
    r->last_sent = 0;
    if (r->presence_timer) {
        loop_cancel_timer(r->loop, r->presence_timer);
        r->presence_timer = 0;
    }
}

int repl_new(struct repl **out, const struct repl_env *env, const struct repl_opts *o)
{
    assert(env && env->loop && env->store && env->hlc && env->node_id && o);
    struct repl *r = xcalloc(1, sizeof(*r));
    r->loop = env->loop;
    r->store = env->store;
    r->tree = env->tree;
    r->hlc = env->hlc;
    r->node_id = env->node_id;
    r->o = *o;
    r->prefix = xstrdup(o->prefix);
    r->addr = xstrdup(o->addr);
    char *ev = join(r->prefix, "/events/"), *nodes = join(r->prefix, "/nodes/");
    r->events_topic = join(ev, r->node_id);
    r->presence_topic = join(nodes, r->node_id);
    r->sub_events = join(r->prefix, "/events/#");
    r->sub_nodes = join(nodes, "+");
    free(ev);
    free(nodes);
    r->o.prefix = r->prefix;
    r->o.addr = r->addr;
    if (r->o.batch_max_events == 0) r->o.batch_max_events = 1;
    if (r->o.max_inflight == 0) r->o.max_inflight = 1;
    r->inflight = xcalloc(r->o.max_inflight, sizeof(*r->inflight));
    buf_init(&r->body);
    buf_init(&r->scratch);
    codec_batch_init(&r->batch);
    store_outbox_counts_at_open(r->store, &r->outbox_rows, &r->outbox_events);

    presence_json(r, &r->scratch, false); /* the last will */
    struct mqtt_opts mo = {
        .host = o->broker,
        .port = o->port,
        .client_id = r->node_id,
        .username = o->username,
        .password = o->password,
        .tls_ca_file = o->tls_ca_file,
        .tls_cert_file = o->tls_cert_file,
        .tls_key_file = o->tls_key_file,
        .keepalive_s = o->keepalive_s,
        .version = o->mqtt_version,
        .reconnect_max_s = o->reconnect_max_s,
        .stall_timeout_ms = o->stall_timeout_s > 0 ? o->stall_timeout_s * 1000 : 0,
        .will_topic = r->presence_topic,
        .will_payload = (const char *) r->scratch.data,
    };
    struct mqtt_handlers h = { .on_connect = on_connect,
                               .on_disconnect = on_disconnect,
                               .on_message = on_message,
                               .on_published = on_published };
    int rc = mqtt_new(&r->mqtt, r->loop, &mo, &h, r);
    /* No Local on the events (MQTT 5): the broker stops echoing this node's own events, which
     * it would receive, decode and drop (apply_event still drops any that come). */
    if (rc == 0) rc = mqtt_subscribe(r->mqtt, r->sub_events, true);
    if (rc == 0) rc = mqtt_subscribe(r->mqtt, r->sub_nodes, false);
    if (rc < 0) {
        repl_free(r, 0);
        return rc;
    }
    if (r->outbox_rows)
        log_info("repl: %llu events in %llu messages wait in the outbox",
                 (unsigned long long) r->outbox_events, (unsigned long long) r->outbox_rows);
    if (o->enabled) repl_enable(r);
    *out = r;
    return 0;
}

void repl_free(struct repl *r, int timeout_ms)
{
    if (!r) return;
    if (r->mqtt && mqtt_is_up(r->mqtt)) {
        presence_json(r, &r->scratch, false);
        (void) mqtt_publish(r->mqtt, r->presence_topic, r->scratch.data, r->scratch.len, 1, true,
                            0);
    }
    if (r->presence_timer) loop_cancel_timer(r->loop, r->presence_timer);
    if (r->ack_timer) loop_cancel_timer(r->loop, r->ack_timer);
    mqtt_free(r->mqtt, timeout_ms);
    free(r->acked);
    for (size_t i = 0; i < r->msgs_cap; i++)
        buf_clear(&r->msgs[i]);
    free(r->msgs);
    free(r->msg_n);
    free(r->msg_id);
    for (size_t i = 0; i < r->npeers; i++)
        free(r->peers[i].name);
    free(r->peers);
    free(r->inflight);
    buf_clear(&r->body);
    buf_clear(&r->scratch);
    codec_batch_clear(&r->batch);
    free(r->prefix);
    free(r->addr);
    free(r->events_topic);
    free(r->presence_topic);
    free(r->sub_events);
    free(r->sub_nodes);
    free(r->listen_prefix);
    free(r->sub_listener);
    free(r);
}

void repl_enable(struct repl *r)
{
    r->enabled = true;
    r->recording = true;
    mqtt_start(r->mqtt);
}

void repl_disable(struct repl *r)
{
    if (!r->enabled) return;
    r->enabled = false;
    /* Keep recording: the outbox carries the changes to peers after REPLICATE enable. */
    if (mqtt_is_up(r->mqtt)) {
        presence_json(r, &r->scratch, false);
        (void) mqtt_publish(r->mqtt, r->presence_topic, r->scratch.data, r->scratch.len, 1, true,
                            0);
    }
    mqtt_stop(r->mqtt, DISCONNECT_WAIT_MS);
}

bool repl_is_enabled(const struct repl *r)
{
    return r && r->enabled;
}

size_t repl_peers_online(const struct repl *r)
{
    size_t n = 0;
    for (size_t i = 0; r && i < r->npeers; i++)
        n += r->peers[i].online;
    return n;
}

/* Age of the oldest event still in the outbox, from its HLC timestamp (wall-clock ns); 0 when the
 * outbox is empty or cannot be read. */
static uint64_t outbox_oldest_age_ms(const struct repl *r)
{
    uint64_t id;
    uint32_t nev;
    const uint8_t *p;
    size_t len;
    if (!r->outbox_rows || store_outbox_next(r->store, 0, &id, &nev, &p, &len) <= 0) return 0;
    struct codec_batch b;
    codec_batch_init(&b);
    char why[64];
    uint64_t oldest = 0;
    if (codec_decode(p, len, &b, why, sizeof(why)) == 0)
        for (size_t i = 0; i < b.n; i++)
            if (!oldest || b.ev[i].ts < oldest) oldest = b.ev[i].ts;
    codec_batch_clear(&b);
    uint64_t now = hlc_wall_ns();
    return oldest && now > oldest ? (now - oldest) / 1000000ULL : 0;
}

void repl_info(const struct repl *r, struct buf *b)
{
    struct mqtt_link_info li = { .last_error = "" };
    if (r) mqtt_link_info(r->mqtt, &li);
    buf_add_field(b, "replication_enabled", repl_is_enabled(r));
    buf_printf(b, "broker_state:%s\r\n", repl_link_state(r));
    buf_add_field(b, "broker_connects", r ? mqtt_connects(r->mqtt) : 0);
    buf_add_field(b, "broker_forced_reconnects", li.forced_reconnects);
    buf_add_field(b, "broker_unacked", li.unacked);
    buf_add_field(b, "broker_send_window", li.send_window);
    buf_add_field(b, "broker_stalled_ms", li.stalled_ms);
    /* One line: the error text must not break INFO's "name:value\r\n" framing. */
    buf_append_str(b, "broker_last_error:");
    for (const char *e = li.last_error; *e; e++)
        buf_append(b, *e == '\r' || *e == '\n' ? " " : e, 1);
    buf_append_str(b, "\r\n");
    buf_add_field(b, "broker_last_error_age_s", li.last_error_age_s);
    buf_add_field(b, "events_published", r ? r->stats.published : 0);
    buf_add_field(b, "events_applied", r ? r->stats.applied : 0);
    buf_add_field(b, "events_duplicate", r ? r->stats.duplicate : 0);
    buf_add_field(b, "events_rejected", r ? r->stats.rejected : 0);
    buf_add_field(b, "events_own", r ? r->stats.own : 0);
    buf_add_field(b, "events_malformed", r ? r->stats.malformed : 0);
    buf_add_field(b, "outbox_depth", r ? r->outbox_events : 0);
    buf_add_field(b, "outbox_oldest_age_ms", r ? outbox_oldest_age_ms(r) : 0);
    buf_add_field(b, "outbox_dropped", r ? r->stats.dropped : 0);
    buf_add_field(b, "peers_online", repl_peers_online(r));
}

const char *repl_link_state(const struct repl *r)
{
    if (!r || !r->enabled) return "disabled";
    return mqtt_state_name(mqtt_state(r->mqtt));
}

int repl_listen(struct repl *r, const struct repl_listener *l)
{
    if (!r) return 0;
    assert(l && l->suffix && l->on_message && !r->listen_prefix);
    r->listener = *l;
    char *p = join(r->prefix, "/");
    char *q = join(p, l->suffix);
    r->listen_prefix = join(q, "/");
    r->sub_listener = join(r->listen_prefix, r->node_id);
    r->listener.suffix = NULL; /* not kept: listen_prefix holds it */
    free(p);
    free(q);
    return mqtt_subscribe(r->mqtt, r->sub_listener, false);
}

int repl_publish(struct repl *r, const char *suffix, const void *payload, size_t len)
{
    assert(suffix && (payload || len == 0));
    if (!r || !r->enabled) return -ENOTCONN;
    size_t n = strlen(r->prefix) + 1 + strlen(suffix) + 1;
    char *topic = xmalloc(n);
    (void) snprintf(topic, n, "%s/%s", r->prefix, suffix);
    int rc = mqtt_publish(r->mqtt, topic, payload, len, 1, false, 0);
    free(topic);
    return rc;
}

size_t repl_online_peers(const struct repl *r, const char **names, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; r && i < r->npeers && n < max; i++)
        if (r->peers[i].online) names[n++] = r->peers[i].name;
    return n;
}
