/* SPDX-License-Identifier: MIT */
/*
 * conn: listener and client connections; see include/arborkv/conn.h.
 *
 * A turn of the event loop goes: readable sockets are read and their complete requests run
 * (handlers append replies to c->cl.out and stage writes in one SQLite transaction); then the
 * before-sleep hook ends the turn (turn.h: commit) and only after a successful commit writes the
 * replies out (conn_flush_turn). Output is therefore never written from a read handler, and an
 * EPOLLOUT event for a client that ran commands this turn is ignored until the commit (its output
 * may hold replies that are not durable yet).
 *
 * Clients paused by backpressure (too much unsent output) go on a resume list when their output
 * drains; the before-sleep hook runs their buffered requests (conn_run_buffered), commits and
 * flushes again, a few rounds at most, then conn_end_turn arms a zero-delay timer so the loop
 * does not block with work buffered.
 *
 * THREADING: event-loop thread only.
 */
#include "arborkv/conn.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arborkv/cmd.h"
#include "arborkv/log.h"
#include "arborkv/loop.h"
#include "arborkv/mem.h"
#include "arborkv/reply.h"
#include "arborkv/server.h"

/* The module's own state, hung on server->conns (conn_init). */
struct conns {
    int listen_fd;           /* listening socket, -1 once closed */
    uint64_t next_client_id; /* last client id handed out */
    struct conn *pending;    /* singly linked: conns with output or work this turn */
    struct conn *closing;    /* singly linked: conns to free after the turn */
    bool resume_armed;       /* a zero-delay timer is armed to resume buffered work */
};

#define ACCEPTS_PER_EVENT 256 /* bound the work of one readable event on the listener */

static void on_client(struct loop *l, int fd, unsigned events, void *arg);
static void process_input(struct conn *c);
static void flush(struct conn *c);

/* Logs at most one line per second for a repeated condition (e.g. EMFILE storms). */
static bool log_allowed(uint64_t *last_us)
{
    uint64_t now = loop_now_us();
    if (*last_us && now - *last_us < 1000000) return false;
    *last_us = now;
    return true;
}

/* The connection of a client handed out by this module (client.h). */
static struct conn *conn_of(struct client *cl)
{
    return (struct conn *) cl; /* cl is the first member */
}

static void set_mask(struct conn *c, unsigned mask)
{
    if (c->cl.fd < 0 || c->mask == mask) return;
    int rc = loop_mod_fd(c->srv->loop, c->cl.fd, mask);
    if (rc < 0)
        log_warn("conn: epoll_ctl(%s): %s", c->cl.addr, strerror(-rc));
    else
        c->mask = mask;
}

static void mark_pending(struct conn *c)
{
    if (c->flags & CONN_PENDING) return;
    c->flags |= CONN_PENDING;
    c->pending_next = c->srv->conns->pending;
    c->srv->conns->pending = c;
}

/* Closes the socket now; the struct is freed by the reaper at the end of the turn. */
static void close_now(struct conn *c)
{
    struct server *srv = c->srv;
    if (c->flags & CONN_CLOSING) return;
    c->flags |= CONN_CLOSING;
    if (c->flags & CONN_BLOCKED) {
        c->flags &= ~CONN_BLOCKED;
        c->on_close(&c->cl, c->on_close_arg);
        c->on_close = NULL;
    }
    if (c->cl.fd >= 0) {
        loop_del_fd(srv->loop, c->cl.fd);
        (void) close(c->cl.fd);
        c->cl.fd = -1;
    }
    struct client *cl = &c->cl;
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        srv->clients = cl->next;
    if (cl->next) cl->next->prev = cl->prev;
    cl->prev = cl->next = NULL;
    srv->nclients--;
    c->closing_next = srv->conns->closing;
    srv->conns->closing = c;
}

static void conn_free(struct conn *c)
{
    cmd_client_clear(&c->cl);
    buf_clear(&c->in);
    buf_clear(&c->cl.out);
    line_cmd_clear(&c->lcmd);
    resp_parser_clear(&c->rp);
    free(c->argv);
    free(c);
}

static void close_after_reply(struct client *cl)
{
    struct conn *c = conn_of(cl);
    c->flags |= CONN_CLOSE_AFTER_REPLY;
    mark_pending(c);
}

static void block(struct client *cl, client_close_fn *on_close, void *arg)
{
    struct conn *c = conn_of(cl);
    c->flags |= CONN_BLOCKED;
    c->on_close = on_close;
    c->on_close_arg = arg;
}

static void unblock(struct client *cl)
{
    struct conn *c = conn_of(cl);
    if (!(c->flags & CONN_BLOCKED)) return;
    c->flags &= ~CONN_BLOCKED;
    c->on_close = NULL;
    /* The reply joins this turn: committed, then flushed, or withdrawn with the turn. */
    if (!(c->flags & CONN_RAN)) {
        c->flags |= CONN_RAN;
        c->turn_mark = c->cl.out.len;
    }
    mark_pending(c);
    if (c->in.len)
        c->flags |= CONN_PAUSED; /* flush() resumes the buffered requests after the reply */
    else if (c->flags & CONN_EOF)
        c->flags |= CONN_CLOSE_AFTER_REPLY; /* the client half-closed while waiting */
}

const struct client_ops conn_client_ops = { close_after_reply, block, unblock };

static void accept_one(struct server *srv, int fd, const struct sockaddr_storage *sa)
{
    static uint64_t last_reject_log;
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 && errno != EOPNOTSUPP)
        log_debug("conn: TCP_NODELAY: %s", strerror(errno));

    struct conn *c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->cl.fd = fd;
    c->cl.id = ++srv->conns->next_client_id;
    c->cl.created_us = c->cl.last_cmd_us = loop_now_us();
    buf_init(&c->in);
    buf_init(&c->cl.out);
    line_parser_init(&c->lp);
    line_cmd_init(&c->lcmd);
    resp_parser_init(&c->rp);

    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
        (void) inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        (void) snprintf(c->cl.addr, sizeof(c->cl.addr), "%s:%d", host, port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
        (void) inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        (void) snprintf(c->cl.addr, sizeof(c->cl.addr), "[%s]:%d", host, port);
    } else {
        (void) snprintf(c->cl.addr, sizeof(c->cl.addr), "unknown");
    }

    int rc = loop_add_fd(srv->loop, fd, LOOP_READ, on_client, c);
    if (rc < 0) {
        log_warn("conn: cannot watch client %s: %s", c->cl.addr, strerror(-rc));
        (void) close(fd);
        conn_free(c);
        return;
    }
    c->mask = LOOP_READ;
    c->cl.ops = &conn_client_ops;
    c->cl.next = srv->clients;
    if (srv->clients) srv->clients->prev = &c->cl;
    srv->clients = &c->cl;
    srv->nclients++;
    srv->stats.total_connections++;
    if (srv->nclients > srv->max_clients) {
        /* Answered in the client's protocol once its first byte tells which one it speaks. */
        c->flags |= CONN_REJECT;
        srv->stats.rejected_connections++;
        if (log_allowed(&last_reject_log))
            log_warn("conn: max_clients (%zu) reached, refusing new clients", srv->max_clients);
    }
}

static void on_accept(struct loop *l, int lfd, unsigned events, void *arg)
{
    static uint64_t last_err_log;
    struct server *srv = arg;
    UNUSED(l);
    UNUSED(events);
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        int fd = accept4(lfd, (struct sockaddr *) &sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK && log_allowed(&last_err_log))
                log_warn("conn: accept: %s", strerror(errno));
            return;
        }
        accept_one(srv, fd, &sa);
    }
}

void conn_init(struct server *srv)
{
    assert(srv && !srv->conns);
    srv->conns = xcalloc(1, sizeof(*srv->conns));
    srv->conns->listen_fd = -1;
}

void conn_fini(struct server *srv)
{
    if (!srv || !srv->conns) return;
    assert(!srv->clients && !srv->conns->closing);
    conn_stop_listening(srv);
    free(srv->conns);
    srv->conns = NULL;
}

int conn_listen(struct server *srv, const char *host, int port)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    char portstr[16];
    (void) snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        log_error("listen: cannot resolve host '%s': %s", host, gai_strerror(gai));
        return -EINVAL;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, CONN_LISTEN_BACKLOG) == 0)
            break;
        err = errno;
        (void) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        log_error("listen: cannot listen on %s:%d: %s", host, port, strerror(err));
        return -err;
    }
    struct sockaddr_storage sa;
    socklen_t salen = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *) &sa, &salen) == 0)
        srv->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &sa)->sin6_port
                                                   : ((struct sockaddr_in *) &sa)->sin_port);
    int rc = loop_add_fd(srv->loop, fd, LOOP_READ, on_accept, srv);
    if (rc < 0) {
        log_error("listen: epoll: %s", strerror(-rc));
        (void) close(fd);
        return rc;
    }
    srv->conns->listen_fd = fd;
    return 0;
}

void conn_stop_listening(struct server *srv)
{
    if (!srv->conns || srv->conns->listen_fd < 0) return;
    loop_del_fd(srv->loop, srv->conns->listen_fd);
    (void) close(srv->conns->listen_fd);
    srv->conns->listen_fd = -1;
}

/* Runs one parsed request: remembers where this turn's replies start, then dispatches. */
static void run_command(struct conn *c, const struct slice *argv, size_t argc)
{
    if (!(c->flags & CONN_RAN)) {
        c->flags |= CONN_RAN;
        c->turn_mark = c->cl.out.len;
    }
    mark_pending(c);
    c->cl.last_cmd_us = loop_now_us();
    cmd_dispatch(&c->cl, c->srv, argv, argc);
    if (conn_unsent(c) > c->srv->output_limit) {
        static uint64_t last_log;
        c->srv->stats.output_limit_disconnects++;
        if (log_allowed(&last_log))
            log_warn("conn: client %s dropped: %zu bytes of unsent output exceed the limit (%zu)",
                     c->cl.addr, conn_unsent(c), c->srv->output_limit);
        close_now(c);
    }
}

static void protocol_error(struct conn *c, const char *msg, size_t len)
{
    if (!(c->flags & CONN_RAN)) {
        c->flags |= CONN_RAN;
        c->turn_mark = c->cl.out.len;
    }
    c->srv->stats.protocol_errors++;
    reply_error_to(&c->cl.out, c->cl.proto == CLIENT_PROTO_RESP, msg, len);
    close_after_reply(&c->cl);
}

/* Runs complete requests from c->in until it is empty, incomplete, or backpressure applies. */
static void process_input(struct conn *c)
{
    size_t pos = 0;
    bool eof = (c->flags & CONN_EOF) != 0;
    if (c->in.len && c->cl.proto == CLIENT_PROTO_UNKNOWN)
        c->cl.proto = c->in.data[0] == '*' ? CLIENT_PROTO_RESP : CLIENT_PROTO_LINE;
    if (c->in.len && (c->flags & CONN_REJECT)) {
        static const char msg[] = "max number of clients reached";
        protocol_error(c, msg, sizeof(msg) - 1);
        buf_reset(&c->in);
        return;
    }
    while (pos < c->in.len &&
           !(c->flags & (CONN_CLOSE_AFTER_REPLY | CONN_CLOSING | CONN_BLOCKED)) &&
           conn_unsent(c) < CONN_SOFT_OUTPUT_BYTES && !c->srv->stopping) {
        const uint8_t *data = c->in.data + pos;
        size_t avail = c->in.len - pos, used = 0;
        if (c->cl.proto == CLIENT_PROTO_LINE) {
            const uint8_t *line;
            size_t line_len;
            int rc = line_next(&c->lp, data, avail, eof, &line, &line_len, &used);
            if (rc == 0) break;
            if (rc < 0) {
                static const char msg[] = "line too long";
                protocol_error(c, msg, sizeof(msg) - 1);
                pos = c->in.len;
                break;
            }
            pos += used;
            if (line_parse(&c->lcmd, line, line_len) < 0) {
                if (!(c->flags & CONN_RAN)) {
                    c->flags |= CONN_RAN;
                    c->turn_mark = c->cl.out.len;
                }
                mark_pending(c);
                reply_error_to(&c->cl.out, c->cl.proto == CLIENT_PROTO_RESP,
                               (const char *) c->lcmd.err.data, c->lcmd.err.len);
                continue;
            }
            run_command(c, c->lcmd.argv, c->lcmd.argc);
        } else {
            int rc = resp_parser_next(&c->rp, data, avail, &used);
            if (rc == 0) break;
            if (rc < 0) {
                protocol_error(c, c->rp.errstr, strlen(c->rp.errstr));
                pos = c->in.len;
                break;
            }
            if (c->rp.argc > c->argv_cap) {
                c->argv_cap = c->rp.argc;
                c->argv = xrealloc(c->argv, c->argv_cap * sizeof(*c->argv));
            }
            for (size_t i = 0; i < c->rp.argc; i++)
                c->argv[i] = (struct slice){ data + c->rp.args[i].off, c->rp.args[i].len };
            pos += used;
            if (c->rp.argc > 0) run_command(c, c->argv, c->rp.argc);
        }
    }
    if (c->flags & CONN_CLOSING) return;
    if (pos) buf_consume(&c->in, pos);
    if (c->in.len && conn_unsent(c) >= CONN_SOFT_OUTPUT_BYTES) c->flags |= CONN_PAUSED;
    if (eof && c->in.len && c->cl.proto == CLIENT_PROTO_RESP &&
        !(c->flags & CONN_CLOSE_AFTER_REPLY))
        buf_reset(&c->in); /* a truncated frame at EOF can never complete */
    /* A blocked client is answered first (unblock closes it then). */
    if (eof && !(c->flags & CONN_BLOCKED) &&
        (c->in.len == 0 || (c->flags & CONN_CLOSE_AFTER_REPLY)))
        close_after_reply(&c->cl);
    /* Backpressure: stop reading while the client is not reading its replies, or while it is
     * blocked with plenty of requests buffered already. */
    unsigned want = (c->flags & CONN_EOF) ? 0 : LOOP_READ;
    if (conn_unsent(c) >= CONN_SOFT_OUTPUT_BYTES) want = 0;
    if ((c->flags & CONN_BLOCKED) && c->in.len >= CONN_BLOCKED_INPUT) want = 0;
    if (conn_unsent(c)) want |= LOOP_WRITE;
    if (c->flags & CONN_RAN) want &= ~LOOP_WRITE; /* flushed after the commit */
    set_mask(c, want);
}

static void read_input(struct conn *c)
{
    size_t chunk = CONN_READ_CHUNK;
    if (c->in.len >= CONN_READ_CHUNK) chunk = c->in.len; /* big frames: grow geometrically */
    buf_reserve(&c->in, chunk);
    ssize_t n = read(c->cl.fd, c->in.data + c->in.len, chunk);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        log_debug("conn: read %s: %s", c->cl.addr, strerror(errno));
        close_now(c);
        return;
    }
    if (n == 0) {
        c->flags |= CONN_EOF;
        mark_pending(c);
    } else {
        c->in.len += (size_t) n;
        c->in.data[c->in.len] = '\0';
    }
    process_input(c);
}

/* Writes as much pending output as the socket takes. Never called with uncommitted replies. */
static void flush(struct conn *c)
{
    while (conn_unsent(c) > 0) {
        ssize_t n = send(c->cl.fd, c->cl.out.data + c->out_pos, conn_unsent(c), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            log_debug("conn: write %s: %s", c->cl.addr, strerror(errno));
            close_now(c);
            return;
        }
        c->out_pos += (size_t) n;
    }
    if (conn_unsent(c) == 0) {
        buf_reset(&c->cl.out);
        c->out_pos = 0;
        if (c->flags & CONN_CLOSE_AFTER_REPLY) {
            close_now(c);
            return;
        }
    } else if (c->out_pos >= CONN_SOFT_OUTPUT_BYTES && c->out_pos * 2 >= c->cl.out.len) {
        buf_consume(&c->cl.out, c->out_pos);
        c->out_pos = 0;
    }
    unsigned want = (c->flags & CONN_EOF) ? 0 : LOOP_READ;
    if (conn_unsent(c) >= CONN_SOFT_OUTPUT_BYTES) want = 0;
    if (conn_unsent(c)) want |= LOOP_WRITE;
    set_mask(c, want);
    /* Requests buffered while paused get no new EPOLLIN: resume them in before-sleep. */
    if ((c->flags & CONN_PAUSED) && conn_unsent(c) < CONN_SOFT_OUTPUT_BYTES) {
        c->flags &= ~CONN_PAUSED;
        mark_pending(c);
    }
}

static void on_client(struct loop *l, int fd, unsigned events, void *arg)
{
    struct conn *c = arg;
    UNUSED(l);
    UNUSED(fd);
    if ((events & LOOP_WRITE) && !(c->flags & (CONN_RAN | CONN_CLOSING))) flush(c);
    if ((events & LOOP_READ) && !(c->flags & CONN_CLOSING)) read_input(c);
}

/* The turn's commit failed (turn.h): its replies were never sent, and reads too may have seen the
 * lost writes, so each is replaced by an error and its client closed. */
void conn_withdraw_turn(struct server *srv)
{
    for (struct conn *c = srv->conns->pending; c; c = c->pending_next) {
        if (!(c->flags & CONN_RAN) || (c->flags & CONN_CLOSING)) continue;
        buf_truncate(&c->cl.out, c->turn_mark);
        static const char msg[] = "write failed: storage error, nothing was stored";
        reply_error_to(&c->cl.out, c->cl.proto == CLIENT_PROTO_RESP, msg, sizeof(msg) - 1);
        c->flags |= CONN_CLOSE_AFTER_REPLY;
    }
}

/* Zero-delay timer: its only job is to keep epoll_wait from blocking while work is buffered. */
static void resume_tick(struct loop *l, void *arg)
{
    struct server *srv = arg;
    UNUSED(l);
    srv->conns->resume_armed = false;
}

void conn_run_buffered(struct server *srv)
{
    /* Clients whose output drained with requests still buffered. */
    for (struct conn *c = srv->conns->pending; c; c = c->pending_next)
        if (!(c->flags & (CONN_RAN | CONN_CLOSING | CONN_PAUSED | CONN_BLOCKED)) && c->in.len &&
            conn_unsent(c) < CONN_SOFT_OUTPUT_BYTES)
            process_input(c);
}

bool conn_flush_turn(struct server *srv)
{
    struct conn *list = srv->conns->pending;
    srv->conns->pending = NULL;
    for (struct conn *c = list, *next; c; c = next) {
        next = c->pending_next;
        c->flags &= ~(CONN_PENDING | CONN_RAN);
        c->pending_next = NULL;
        if (c->flags & CONN_CLOSING) continue;
        flush(c);
    }
    return srv->conns->pending != NULL;
}

void conn_end_turn(struct server *srv)
{
    /* Still work buffered (heavy pipelining): don't let epoll_wait block on it. */
    if (srv->conns->pending && !srv->conns->resume_armed) {
        srv->conns->resume_armed = true;
        (void) loop_add_timer(srv->loop, 0, resume_tick, srv);
    }
    while (srv->conns->closing) {
        struct conn *c = srv->conns->closing;
        srv->conns->closing = c->closing_next;
        conn_free(c);
    }
}

void conn_close_all(struct server *srv, uint64_t timeout_us)
{
    if (!srv->conns) return; /* conn_init never ran */
    uint64_t deadline = loop_now_us() + timeout_us;
    for (;;) {
        struct pollfd pfds[256];
        nfds_t n = 0;
        for (struct client *cl = srv->clients; cl && n < 256; cl = cl->next) {
            struct conn *c = conn_of(cl);
            if (conn_unsent(c) && c->cl.fd >= 0)
                pfds[n++] = (struct pollfd){ .fd = c->cl.fd, .events = POLLOUT };
        }
        uint64_t now = loop_now_us();
        if (n == 0 || now >= deadline) break;
        int rc = poll(pfds, n, (int) ((deadline - now + 999) / 1000));
        if (rc < 0 && errno != EINTR) break;
        for (struct client *cl = srv->clients, *next; cl; cl = next) {
            next = cl->next;
            struct conn *c = conn_of(cl);
            if (conn_unsent(c) && c->cl.fd >= 0) flush(c);
        }
    }
    while (srv->clients)
        close_now(conn_of(srv->clients));
    while (srv->conns->closing) {
        struct conn *c = srv->conns->closing;
        srv->conns->closing = c->closing_next;
        conn_free(c);
    }
}
