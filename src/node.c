/* SPDX-License-Identifier: MIT */
/*
 * node: the wiring of a node. Creates the modules in order, hands each the handles it needs,
 * registers the turn's commit hooks (turn.h) and the loop's before-sleep order, runs the loop,
 * and shuts down in order. The only file that knows every module.
 *
 * Startup: open the store (refusing a corrupt or foreign database), build the Merkle tree, seed
 * the clock from the largest stored timestamp, listen, then start replication (clients are
 * served while the broker is still being reached). Shutdown (SIGTERM, SIGINT or SHUTDOWN): stop
 * accepting, let the before-sleep hook commit and flush the last turn, give slow clients up to
 * SHUTDOWN_FLUSH_US to take their replies, disconnect from the broker, close the store.
 */
#include "arborkv/node.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"

#include "arborkv/ae.h"
#include "arborkv/cmd.h"
#include "arborkv/conf.h"
#include "arborkv/conn.h"
#include "arborkv/hlc.h"
#include "arborkv/log.h"
#include "arborkv/loop.h"
#include "arborkv/mem.h"
#include "arborkv/merkle.h"
#include "arborkv/mirror.h"
#include "arborkv/purge.h"
#include "arborkv/repl.h"
#include "arborkv/server.h"
#include "arborkv/store.h"
#include "arborkv/turn.h"

#define SHUTDOWN_FLUSH_US  500000    /* time given to clients to read their last replies */
#define REPL_DISCONNECT_MS 300       /* time given to the broker link to say goodbye at shutdown */
#define MAX_TREE_LEAVES    (1 << 20) /* Merkle leaf buckets at most (~38 MB of tree) */
#define RESUME_ROUNDS      4         /* run buffered/commit/flush rounds per before-sleep */

static void on_signal(struct loop *l, int fd, unsigned events, void *arg)
{
    struct server *srv = arg;
    struct signalfd_siginfo si;
    UNUSED(events);
    while (read(fd, &si, sizeof(si)) == (ssize_t) sizeof(si)) {
        log_info("received %s, shutting down", strsignal((int) si.ssi_signo));
        srv->stopping = true;
    }
    conn_stop_listening(srv);
    UNUSED(l);
}

/*
 * The end of every loop turn (redis's beforeSleep): the turn's commit (turn.h) comes after its
 * requests ran and before any reply is written; clients that pipelined more than fitted their
 * output get a few more rounds; then replication publishes what was committed (and fills the
 * room acknowledgements freed), the read transaction ends and the store does its upkeep.
 */
static void before_sleep(struct loop *l, void *arg)
{
    struct server *srv = arg;
    for (int round = 0; round < RESUME_ROUNDS; round++) {
        conn_run_buffered(srv);
        (void) turn_end(srv->turn);
        if (!conn_flush_turn(srv)) break;
    }
    conn_end_turn(srv);
    repl_pump(srv->repl);       /* what this turn committed, and room freed by acknowledgements */
    store_end_read(srv->store); /* the turn's read transaction, if no write ended it */
    store_maintain(srv->store); /* after the turn's replies and publishes are out */
    if (srv->stopping) {
        conn_stop_listening(srv);
        loop_stop(l);
    }
}

/* Hooks of the turn's commit, in turn.h's slot order. */
static int outbox_before_commit(void *arg)
{
    return repl_before_commit(arg);
}

static void outbox_after_commit(void *arg, bool committed)
{
    repl_after_commit(arg, committed);
}

static void ae_turn_ended(void *arg, bool committed)
{
    ae_after_commit(arg, committed);
}

static void replies_after_commit(void *arg, bool committed)
{
    if (!committed) conn_withdraw_turn(arg);
}

static void set_turn_hooks(struct server *srv)
{
    turn_set_hook(srv->turn, TURN_OUTBOX,
                  &(struct turn_hook){ outbox_before_commit, outbox_after_commit, srv->repl });
    turn_set_hook(srv->turn, TURN_AE, &(struct turn_hook){ NULL, ae_turn_ended, srv->ae });
    turn_set_hook(srv->turn, TURN_REPLIES, &(struct turn_hook){ NULL, replies_after_commit, srv });
}

/* Lets the process hold max_clients sockets plus the store and a margin. */
static void raise_fd_limit(size_t max_clients)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = (rlim_t) max_clients + 64;
    if (rl.rlim_cur >= want) return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_warn("cannot raise the open-file limit: %s", strerror(errno));
    if (rl.rlim_cur < want)
        log_warn("open-file limit %llu is below max_clients + 64; raise it (ulimit -n)",
                 (unsigned long long) rl.rlim_cur);
}

/* Builds the replication layer from the [replication] settings; it connects only if enabled. */
static int start_replication(struct server *srv, const struct conf *c)
{
    char addr[300];
    (void) snprintf(addr, sizeof(addr), "%s:%d", c->host, srv->port);
    struct repl_opts o = {
        .enabled = c->repl_enabled,
        .broker = c->mqtt_broker,
        .port = c->mqtt_port,
        .prefix = c->topic_prefix,
        .username = c->mqtt_username,
        .password = c->client_password,
        .tls_ca_file = c->tls_ca_file,
        .tls_cert_file = c->tls_cert_file,
        .tls_key_file = c->tls_key_file,
        .keepalive_s = (int) c->keepalive_seconds,
        .mqtt_version = (int) c->mqtt_version,
        .wire_merklekv = c->wire_merklekv,
        .batch_max_events = (size_t) c->batch_max_events,
        .max_inflight = (size_t) c->max_inflight,
        .outbox_max_events = (uint64_t) c->outbox_max_events,
        .reconnect_max_s = (int) c->reconnect_max_seconds,
        .stall_timeout_s = (int) c->stall_timeout_seconds,
        .addr = addr,
    };
    struct repl_env env = { .loop = srv->loop,
                            .store = srv->store,
                            .tree = srv->tree,
                            .hlc = &srv->hlc,
                            .node_id = srv->node_id };
    int rc = repl_new(&srv->repl, &env, &o);
    struct ae_opts ao = { .enabled = c->ae_enabled,
                          .interval_s = c->ae_interval_seconds,
                          .step_timeout_s =
                                  c->ae_interval_seconds < 5 ? c->ae_interval_seconds : 5 };
    struct ae_env aenv = { .loop = srv->loop,
                           .store = srv->store,
                           .tree = srv->tree,
                           .hlc = &srv->hlc,
                           .purge = srv->purge,
                           .node_id = srv->node_id };
    if (rc == 0) rc = ae_new(&srv->ae, &aenv, srv->repl, &ao);
    struct mirror_opts mo = { .timeout_s = c->sync_timeout_seconds };
    struct mirror_env menv = { .loop = srv->loop,
                               .store = srv->store,
                               .tree = srv->tree,
                               .hlc = &srv->hlc,
                               .ae = srv->ae,
                               .kv = &srv->kv };
    if (rc == 0) rc = mirror_new(&srv->mirror, &menv, &mo);
    if (rc < 0)
        log_error("cannot start replication: %s", strerror(-rc));
    else if (c->repl_enabled)
        log_info("replication: broker %s:%d, topics %s/events/#", c->mqtt_broker, c->mqtt_port,
                 c->topic_prefix);
    return rc;
}

/* Default node id: "<hostname>-<port>", with characters unusable in an MQTT topic level mapped
 * to '_'; stable across restarts of the same node, which MQTT persistent sessions need. */
static char *default_node_id(const struct conf *c)
{
    char host[256] = "arborkv";
    if (gethostname(host, sizeof(host) - 1) != 0) (void) snprintf(host, sizeof(host), "arborkv");
    host[sizeof(host) - 1] = '\0';
    char *id = xmalloc(strlen(host) + 16);
    (void) sprintf(id, "%s-%d", host, c->port);
    for (char *p = id; *p; p++)
        if (*p == '/' || *p == '+' || *p == '#' || *p <= ' ' || *p > '~') *p = '_';
    return id;
}

int node_run(const struct conf *cp, const char *config_path)
{
    const struct conf conf = *cp; /* read only; strings stay the caller's */
    struct server srv;
    struct loop *loop = NULL;
    struct store *store = NULL;
    struct merkle *tree = NULL;
    char *node_id = NULL;
    int status = 1, sfd = -1, rc;
    memset(&srv, 0, sizeof(srv));

    if (sodium_init() < 0) {
        log_error("libsodium failed to initialize");
        goto out;
    }
    (void) signal(SIGPIPE, SIG_IGN);
    raise_fd_limit((size_t) conf.max_clients);

    char why[512] = "";
    enum store_engine engine =
            conf.engine == CONF_ENGINE_MEMORY ? STORE_ENGINE_MEMORY : STORE_ENGINE_SQLITE;
    rc = store_open(&store, engine, conf.storage_path,
                    conf.fsync == CONF_FSYNC_ALWAYS ? STORE_DURABLE_POWER : STORE_DURABLE_PROCESS,
                    why, sizeof(why));
    if (rc < 0) {
        log_error("cannot open the store: %s", why);
        goto out;
    }
    uint64_t leaves = 1;
    for (int i = 0; i < conf.merkle_depth; i++)
        leaves *= (uint64_t) conf.merkle_fanout;
    if (leaves > MAX_TREE_LEAVES) {
        fprintf(stderr, "%s: anti_entropy.fanout^depth is %llu leaf buckets; at most %d\n",
                config_path ? config_path : "configuration", (unsigned long long) leaves,
                MAX_TREE_LEAVES);
        status = NODE_EXIT_CONFIG;
        goto out;
    }
    uint64_t t0 = loop_now_us();
    if (merkle_new(&tree, (unsigned) conf.merkle_fanout, (unsigned) conf.merkle_depth) < 0 ||
        store_attach_tree(store, tree) < 0) {
        log_error("cannot build the Merkle tree");
        goto out;
    }
    log_info("merkle: %llu records in %ux%u tree built in %llu ms",
             (unsigned long long) merkle_count(tree), merkle_fanout(tree), merkle_depth(tree),
             (unsigned long long) ((loop_now_us() - t0) / 1000));

    loop = loop_new();
    if (!loop) {
        log_error("cannot create the event loop: %s", strerror(errno));
        goto out;
    }
    node_id = conf.node_id     ? xstrdup(conf.node_id)
              : conf.client_id ? xstrdup(conf.client_id)
                               : default_node_id(&conf);
    srv.loop = loop;
    srv.store = store;
    srv.turn = turn_new(store);
    srv.tree = tree;
    srv.node_id = node_id;
    srv.engine_name = store_engine_name(store);
    srv.fsync_name = conf.fsync == CONF_FSYNC_ALWAYS ? "always" : "normal";
    srv.max_clients = (size_t) conf.max_clients;
    srv.output_limit = (size_t) conf.client_output_limit;
    srv.start_us = loop_now_us();
    srv.start_unix_s = hlc_wall_ns() / 1000000000ULL;
    hlc_init(&srv.hlc, store_max_ts_at_open(store),
             (uint64_t) conf.max_clock_skew_seconds * 1000000000ULL);
    cmd_init(&srv);
    conn_init(&srv);
    (void) purge_new(&srv.purge, loop, store, (uint64_t) conf.tombstone_ttl_seconds);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0 ||
        (sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
        loop_add_fd(loop, sfd, LOOP_READ, on_signal, &srv) < 0) {
        log_error("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    if (conn_listen(&srv, conf.host, conf.port) < 0) goto out;
    /* After the signal mask (paho's threads inherit it: signals stay with the signalfd) and
     * after the listener (clients are served while the broker is still being reached). */
    if (start_replication(&srv, &conf) < 0) goto out;
    srv.kv = (struct kv){ .store = store, .hlc = &srv.hlc, .opids = &srv.opids, .repl = srv.repl };
    set_turn_hooks(&srv);
    loop_set_before_sleep(loop, before_sleep, &srv);
    log_info("arborkv %s node %s listening on %s:%d (engine %s, fsync %s)", ARBORKV_VERSION,
             node_id, conf.host, srv.port, srv.engine_name, srv.fsync_name);

    loop_run(loop);

    conn_stop_listening(&srv);
    conn_close_all(&srv, SHUTDOWN_FLUSH_US);
    mirror_free(srv.mirror); /* after the clients: a SYNC in progress is abandoned */
    srv.mirror = NULL;
    repl_free(srv.repl, REPL_DISCONNECT_MS);
    srv.repl = NULL;
    ae_free(srv.ae);
    srv.ae = NULL;
    status = 0;
    log_info("shutdown complete");

out:
    mirror_free(srv.mirror);
    repl_free(srv.repl, 0);
    ae_free(srv.ae);
    purge_free(srv.purge);
    if (sfd >= 0) (void) close(sfd);
    conn_close_all(&srv, 0);
    conn_fini(&srv);
    if (srv.cmd_state) cmd_free(&srv);
    turn_free(srv.turn);
    store_close(store);
    merkle_free(tree);
    loop_free(loop);
    free(node_id);
    return status;
}
