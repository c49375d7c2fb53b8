/* SPDX-License-Identifier: MIT */
/*
 * repl_latency: write-to-visible latency of replication, measured from a client.
 *
 *   repl_latency -w WRITER_PORT -r READER_PORT [-H HOST] [-R RATE] [-s SECONDS] [-W WINDOW]
 *                [-i POLL_US] [-p PREFIX] [-t DRAIN_S] [-o FILE]
 *
 * Speaks the line protocol to two nodes. On the writer it sends `SET <prefix>:<i> <send_ns>` at
 * a fixed rate (default 1,000/s for 10 s) on an open-loop schedule: write i is due at
 * start + i/RATE, whatever happened to the writes before it. On the reader it polls, with one
 * `MGET` at a time, at most every POLL_US (default 100 us), the WINDOW (default 64) oldest writes
 * not yet seen; events from one publisher are applied in order, so the oldest outstanding keys
 * are the ones to look at. A write is visible when the reader returns its key with exactly the
 * value that was sent (a key left by an earlier run does not count).
 *
 * Latency of write i = receive time of the first MGET reply that shows it - time the SET was
 * handed to send() (CLOCK_MONOTONIC). The polling adds up to POLL_US plus one MGET round trip.
 * Also printed: the writer's own reply latency (ack) and how late sends left against their
 * schedule (lag; a large lag means this client, not the cluster, fell behind).
 *
 * Output, one figure per key=value, times in ms:
 *   visible: missing=M count=N p50_ms=.. p90_ms=.. p99_ms=.. p999_ms=.. max_ms=..
 *   ack: ...    lag: unsent=..  ...    polls: ...
 * Exit status 0 if every write became visible within DRAIN_S (default 5 s) after the last send,
 * 1 if some did not, 2 on a usage, connection or protocol error. -o FILE writes one line per
 * write: "i sched_ns sent_ns acked_ns visible_ns" (monotonic; 0 = never), to see when the slow
 * ones happened.
 * Links libc only. Not part of the test suite; built by meson as build/tools/repl_latency.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NOT_SENT   UINT64_MAX
#define NOT_SEEN   UINT64_MAX
#define WINDOW_MAX 1024

struct opts {
    const char *host;
    const char *writer_port, *reader_port;
    uint64_t rate;      /* writes per second */
    uint64_t seconds;   /* duration of the schedule */
    size_t window;      /* keys per MGET */
    uint64_t poll_ns;   /* minimum time between two MGETs */
    const char *prefix; /* key prefix */
    uint64_t drain_ns;  /* wait for visibility after the last send */
    const char *trace;  /* per-write times to this file, or NULL */
};

struct conn {
    const char *name;
    int fd;
    char *in; /* received, not parsed yet */
    size_t in_len, in_cap;
    char *out; /* to send: out[out_off, out_len) */
    size_t out_off, out_len, out_cap;
};

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void) fputs("repl_latency: ", stderr);
    (void) vfprintf(stderr, fmt, ap);
    (void) fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc_or_die(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) die("out of memory (%zu bytes)", n);
    return q;
}

static uint64_t *alloc_u64(size_t n)
{
    uint64_t *p = malloc(n ? n * sizeof(uint64_t) : 1);
    if (!p) die("out of memory (%zu values)", n);
    return p;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) die("clock_gettime: %s", strerror(errno));
    return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static uint64_t parse_u64(const char *s, const char *what, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
        die("%s must be an integer in %" PRIu64 "..%" PRIu64 ", not '%s'", what, min, max, s);
    return (uint64_t) v;
}

__attribute__((noreturn)) static void usage(void)
{
    (void) fputs("usage: repl_latency -w WRITER_PORT -r READER_PORT [-H HOST] [-R RATE] "
                 "[-s SECONDS] [-W WINDOW] [-i POLL_US] [-p PREFIX] [-t DRAIN_S] [-o FILE]\n",
                 stderr);
    exit(2);
}

static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints, *res, *ai;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) die("%s:%s: %s", host, port, gai_strerror(rc));
    int fd = -1, err = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        err = errno;
        (void) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) die("connect %s:%s: %s", host, port, strerror(err));
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        die("setsockopt(TCP_NODELAY): %s", strerror(errno));
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl(O_NONBLOCK): %s", strerror(errno));
    return fd;
}

static void out_append(struct conn *c, const char *s, size_t n)
{
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = xrealloc_or_die(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

/* Sends what the kernel takes now. */
static void flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            die("send to %s: %s", c->name, strerror(errno));
        }
        c->out_off += (size_t) n;
    }
}

/* Reads what is available; dies on EOF or error. */
static void fill_in(struct conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap * 2 + 65536;
            c->in = xrealloc_or_die(c->in, c->in_cap);
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            die("recv from %s: %s", c->name, strerror(errno));
        }
        if (n == 0) die("%s closed the connection", c->name);
        c->in_len += (size_t) n;
    }
}

/* The line starting at off (without "\r\n"), or NULL if not complete yet. *next: after it. */
static const char *line_at(const struct conn *c, size_t off, size_t *len, size_t *next)
{
    const char *nl = memchr(c->in + off, '\n', c->in_len - off);
    if (!nl) return NULL;
    size_t end = (size_t) (nl - c->in);
    *next = end + 1;
    if (end > off && c->in[end - 1] == '\r') end--;
    *len = end - off;
    return c->in + off;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n), in ms. */
static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (n == 0) return 0.0;
    size_t rank = (size_t) (p * (double) n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return (double) v[rank - 1] / 1e6;
}

static void print_dist(const char *label, const char *missing, size_t nmissing, uint64_t *v,
                       size_t n)
{
    qsort(v, n, sizeof(*v), cmp_u64);
    printf("%s %s=%zu count=%zu p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n",
           label, missing, nmissing, n, pct_ms(v, n, 0.50), pct_ms(v, n, 0.90), pct_ms(v, n, 0.99),
           pct_ms(v, n, 0.999), n ? (double) v[n - 1] / 1e6 : 0.0);
}

int main(int argc, char **argv)
{
    struct opts o = { .host = "127.0.0.1",
                      .rate = 1000,
                      .seconds = 10,
                      .window = 64,
                      .poll_ns = 100000,
                      .prefix = "lat",
                      .drain_ns = 5000000000ULL };
    int ch;
    while ((ch = getopt(argc, argv, "w:r:H:R:s:W:i:p:t:o:")) != -1) {
        switch (ch) {
        case 'w':
            o.writer_port = optarg;
            break;
        case 'r':
            o.reader_port = optarg;
            break;
        case 'H':
            o.host = optarg;
            break;
        case 'R':
            o.rate = parse_u64(optarg, "-R RATE", 1, 10000000);
            break;
        case 's':
            o.seconds = parse_u64(optarg, "-s SECONDS", 1, 86400);
            break;
        case 'W':
            o.window = (size_t) parse_u64(optarg, "-W WINDOW", 1, WINDOW_MAX);
            break;
        case 'i':
            o.poll_ns = parse_u64(optarg, "-i POLL_US", 0, 1000000) * 1000;
            break;
        case 'p':
            o.prefix = optarg;
            break;
        case 'o':
            o.trace = optarg;
            break;
        case 't':
            o.drain_ns = parse_u64(optarg, "-t DRAIN_S", 1, 3600) * 1000000000ULL;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || !o.writer_port || !o.reader_port) usage();
    if (!*o.prefix || strpbrk(o.prefix, " \t\r\n")) die("-p PREFIX must be non-empty, no blanks");
    if (o.rate * o.seconds > 100000000) die("RATE * SECONDS must be at most 100,000,000");
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) die("signal: %s", strerror(errno));

    const size_t total = (size_t) (o.rate * o.seconds);
    uint64_t *sched = alloc_u64(total);
    uint64_t *sent = alloc_u64(total);  /* send() time */
    uint64_t *seen = alloc_u64(total);  /* visible on reader */
    uint64_t *acked = alloc_u64(total); /* writer replied */
    for (size_t i = 0; i < total; i++)
        sent[i] = seen[i] = acked[i] = NOT_SENT;

    struct conn w = { .name = "writer", .fd = connect_to(o.host, o.writer_port) };
    struct conn r = { .name = "reader", .fd = connect_to(o.host, o.reader_port) };

    size_t next = 0;   /* next write to send */
    size_t nacked = 0; /* writer replies received (in order) */
    size_t oldest = 0; /* every write before it is visible */
    size_t poll_idx[WINDOW_MAX], poll_n = 0;
    bool poll_inflight = false;
    uint64_t last_poll = 0, npolls = 0;
    char line[512];

    const uint64_t start = now_ns() + 1000000; /* first write 1 ms from now */
    for (size_t i = 0; i < total; i++)
        sched[i] = start + (uint64_t) i * 1000000000ULL / o.rate; /* i < 1e8: no overflow */
    const uint64_t deadline = sched[total - 1] + o.drain_ns;

    for (;;) {
        uint64_t now = now_ns();

        /* Writes that are due (several if this client woke up late). */
        if (next < total && sched[next] <= now) {
            while (next < total && sched[next] <= now) {
                int n = snprintf(line, sizeof(line), "SET %s:%zu %" PRIu64 "\n", o.prefix, next,
                                 now);
                if (n < 0 || (size_t) n >= sizeof(line)) die("key prefix too long");
                out_append(&w, line, (size_t) n);
                sent[next++] = now;
            }
            flush_out(&w);
        }

        /* One MGET at a time over the oldest writes not yet seen. */
        while (oldest < next && seen[oldest] != NOT_SEEN)
            oldest++;
        if (!poll_inflight && oldest < next && now >= last_poll + o.poll_ns) {
            out_append(&r, "MGET", 4);
            poll_n = 0;
            for (size_t i = oldest; i < next && poll_n < o.window; i++) {
                if (seen[i] != NOT_SEEN) continue;
                int n = snprintf(line, sizeof(line), " %s:%zu", o.prefix, i);
                if (n < 0 || (size_t) n >= sizeof(line)) die("key prefix too long");
                out_append(&r, line, (size_t) n);
                poll_idx[poll_n++] = i;
            }
            out_append(&r, "\n", 1);
            flush_out(&r);
            poll_inflight = true;
            last_poll = now;
            npolls++;
        }

        if (next == total && nacked == total && oldest == total) break;
        if (now >= deadline) break;

        /* Sleep until the next due write, the next allowed poll, I/O, or the deadline. */
        uint64_t wake = deadline;
        if (next < total && sched[next] < wake) wake = sched[next];
        if (!poll_inflight && oldest < next && last_poll + o.poll_ns < wake)
            wake = last_poll + o.poll_ns;
        uint64_t wait = wake > now ? wake - now : 0;
        struct timespec ts = { .tv_sec = (time_t) (wait / 1000000000ULL),
                               .tv_nsec = (long) (wait % 1000000000ULL) };
        struct pollfd pfd[2] = {
            { .fd = w.fd, .events = (short) (POLLIN | (w.out_off < w.out_len ? POLLOUT : 0)) },
            { .fd = r.fd, .events = (short) (POLLIN | (r.out_off < r.out_len ? POLLOUT : 0)) },
        };
        int pr = ppoll(pfd, 2, &ts, NULL);
        if (pr < 0) {
            if (errno == EINTR) continue;
            die("ppoll: %s", strerror(errno));
        }
        if (pr == 0) continue;
        for (int k = 0; k < 2; k++)
            if (pfd[k].revents & (POLLERR | POLLNVAL))
                die("%s: socket error (revents 0x%x)", k ? "reader" : "writer", pfd[k].revents);
        now = now_ns();
        if (pfd[0].revents & POLLOUT) flush_out(&w);
        if (pfd[1].revents & POLLOUT) flush_out(&r);

        if (pfd[0].revents & (POLLIN | POLLHUP)) {
            fill_in(&w);
            size_t off = 0, len, nxt;
            const char *l;
            while ((l = line_at(&w, off, &len, &nxt))) {
                if (len != 2 || memcmp(l, "OK", 2) != 0)
                    die("writer answered '%.*s' to a SET", (int) (len > 200 ? 200 : len), l);
                if (nacked >= next) die("writer sent more replies than requests");
                acked[nacked++] = now;
                off = nxt;
            }
            consume(&w, off);
        }

        if (pfd[1].revents & (POLLIN | POLLHUP)) {
            fill_in(&r);
            size_t len, nxt;
            const char *l = line_at(&r, 0, &len, &nxt);
            if (!l) continue;
            if (!poll_inflight) die("reader sent a reply nobody asked for");
            if (len == 9 && !memcmp(l, "NOT_FOUND", 9)) {
                consume(&r, nxt);
                poll_inflight = false;
                continue;
            }
            if (len < 7 || memcmp(l, "VALUES ", 7) != 0)
                die("reader answered '%.*s' to MGET", (int) (len > 200 ? 200 : len), l);
            /* VALUES <found>, then one line per requested key: wait until all are here. */
            size_t off = nxt, ends[WINDOW_MAX], starts[WINDOW_MAX], lens[WINDOW_MAX];
            size_t got = 0;
            while (got < poll_n && (l = line_at(&r, off, &len, &nxt))) {
                starts[got] = off;
                lens[got] = len;
                ends[got] = nxt;
                got++;
                off = nxt;
            }
            if (got < poll_n) continue; /* the rest of the reply is still on its way */
            for (size_t j = 0; j < poll_n; j++) {
                size_t i = poll_idx[j];
                const char *s = r.in + starts[j];
                int kn = snprintf(line, sizeof(line), "%s:%zu ", o.prefix, i);
                if (kn < 0 || (size_t) kn >= sizeof(line)) die("key prefix too long");
                if (lens[j] < (size_t) kn || memcmp(s, line, (size_t) kn) != 0)
                    die("reader answered '%.*s' for key %s:%zu",
                        (int) (lens[j] > 200 ? 200 : lens[j]), s, o.prefix, i);
                const char *v = s + kn;
                size_t vlen = lens[j] - (size_t) kn;
                int vn = snprintf(line, sizeof(line), "%" PRIu64, sent[i]);
                if (vn < 0 || (size_t) vn >= sizeof(line)) die("value too long");
                if (vlen == (size_t) vn && !memcmp(v, line, vlen) && seen[i] == NOT_SEEN)
                    seen[i] = now;
            }
            consume(&r, poll_n ? ends[poll_n - 1] : nxt);
            poll_inflight = false;
        }
    }

    if (o.trace) {
        FILE *f = fopen(o.trace, "w");
        if (!f) die("%s: %s", o.trace, strerror(errno));
        for (size_t i = 0; i < total; i++)
            (void) fprintf(f, "%zu %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", i, sched[i],
                           sent[i] == NOT_SENT ? 0 : sent[i], acked[i] == NOT_SENT ? 0 : acked[i],
                           seen[i] == NOT_SEEN ? 0 : seen[i]);
        if (fclose(f) != 0) die("%s: %s", o.trace, strerror(errno));
    }

    /* Report. */
    uint64_t *lat = alloc_u64(total);
    size_t nlat = 0, nack = 0, nlag = 0;
    for (size_t i = 0; i < total; i++)
        if (seen[i] != NOT_SEEN && sent[i] != NOT_SENT) lat[nlat++] = seen[i] - sent[i];
    printf("repl_latency: writer %s:%s, reader %s:%s, %" PRIu64 " writes/s for %" PRIu64
           " s (%zu writes), MGET of up to %zu keys every %" PRIu64 " us at most\n",
           o.host, o.writer_port, o.host, o.reader_port, o.rate, o.seconds, total, o.window,
           o.poll_ns / 1000);
    print_dist("visible:", "missing", total - nlat, lat, nlat);
    for (size_t i = 0; i < total; i++)
        if (acked[i] != NOT_SENT && sent[i] != NOT_SENT) lat[nack++] = acked[i] - sent[i];
    print_dist("ack:", "missing", total - nack, lat, nack);
    for (size_t i = 0; i < total; i++)
        if (sent[i] != NOT_SENT) lat[nlag++] = sent[i] - sched[i];
    print_dist("lag:", "unsent", total - nlag, lat, nlag);
    printf("polls: count=%" PRIu64 " per_write=%.2f\n", npolls,
           total ? (double) npolls / (double) total : 0.0);
    if (fflush(stdout) != 0) die("stdout: %s", strerror(errno));

    (void) close(w.fd);
    (void) close(r.fd);
    free(sched);
    free(sent);
    free(seen);
    free(acked);
    free(lat);
    free(w.in);
    free(w.out);
    free(r.in);
    free(r.out);
    return nlat == total ? 0 : 1;
}
