/* SPDX-License-Identifier: MIT */
/*
 * loop: epoll event loop; see include/arborkv/loop.h.
 *
 * Handlers are kept in an array indexed by fd (grown on demand), so dispatch is O(1) and a
 * handler that unregisters another fd (or itself) during a batch is safe: the slot's mask is
 * cleared and later events for it in the same batch are skipped. Timers are few (periodic jobs
 * of later issues), so they live in a small unsorted array scanned once per turn.
 *
 * THREADING: single-threaded; nothing here is safe to call from another thread.
 */
#include "arborkv/loop.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "arborkv/log.h"
#include "arborkv/mem.h"

#define LOOP_MAX_EVENTS 1024 /* events fetched per epoll_wait */

struct fd_slot {
    loop_fd_fn *fn; /* handler; NULL when the slot is unused */
    void *arg;      /* handler argument */
    unsigned mask;  /* LOOP_READ|LOOP_WRITE currently requested */
};

struct timer {
    uint64_t id;      /* > 0; 0 marks a free entry */
    uint64_t when_us; /* loop_now_us() deadline */
    loop_timer_fn *fn;
    void *arg;
};

struct loop {
    int epfd;               /* epoll instance */
    struct fd_slot *slots;  /* indexed by fd */
    size_t nslots;          /* entries allocated in slots */
    struct timer *timers;   /* ntimers entries, free ones have id 0 */
    size_t ntimers;         /* entries allocated in timers */
    uint64_t next_timer_id; /* last id handed out */
    loop_hook_fn *before_sleep;
    void *before_sleep_arg;
    bool stop; /* set by loop_stop */
};

uint64_t loop_now_us(void)
{
    struct timespec ts;
    (void) clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

struct loop *loop_new(void)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return NULL;
    struct loop *l = xcalloc(1, sizeof(*l));
    l->epfd = fd;
    return l;
}

void loop_free(struct loop *l)
{
    if (!l) return;
    if (l->epfd >= 0) (void) close(l->epfd);
    free(l->slots);
    free(l->timers);
    free(l);
}

static uint32_t to_epoll(unsigned mask)
{
    return ((mask & LOOP_READ) ? EPOLLIN : 0) | ((mask & LOOP_WRITE) ? EPOLLOUT : 0);
}

int loop_add_fd(struct loop *l, int fd, unsigned mask, loop_fd_fn *fn, void *arg)
{
    assert(l && fd >= 0 && fn);
    if (fd < 0) return -EINVAL;
    if ((size_t) fd >= l->nslots) {
        size_t n = l->nslots ? l->nslots : 64;
        while (n <= (size_t) fd)
            n *= 2;
        l->slots = xrealloc(l->slots, n * sizeof(*l->slots));
        memset(l->slots + l->nslots, 0, (n - l->nslots) * sizeof(*l->slots));
        l->nslots = n;
    }
    struct epoll_event ev = { .events = to_epoll(mask), .data.fd = fd };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
    l->slots[fd] = (struct fd_slot){ .fn = fn, .arg = arg, .mask = mask };
    return 0;
}

int loop_mod_fd(struct loop *l, int fd, unsigned mask)
{
    if (fd < 0 || (size_t) fd >= l->nslots || !l->slots[fd].fn) return -EINVAL;
    if (l->slots[fd].mask == mask) return 0;
    struct epoll_event ev = { .events = to_epoll(mask), .data.fd = fd };
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) return -errno;
    l->slots[fd].mask = mask;
    return 0;
}

void loop_del_fd(struct loop *l, int fd)
{
    if (fd < 0 || (size_t) fd >= l->nslots || !l->slots[fd].fn) return;
    /* Failure only means the fd was already closed, which removed it from the epoll set. */
    (void) epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    l->slots[fd] = (struct fd_slot){ 0 };
}

uint64_t loop_add_timer(struct loop *l, uint64_t delay_us, loop_timer_fn *fn, void *arg)
{
    assert(l && fn);
    size_t i;
    for (i = 0; i < l->ntimers; i++)
        if (l->timers[i].id == 0) break;
    if (i == l->ntimers) {
        size_t n = l->ntimers ? l->ntimers * 2 : 8;
        l->timers = xrealloc(l->timers, n * sizeof(*l->timers));
        memset(l->timers + l->ntimers, 0, (n - l->ntimers) * sizeof(*l->timers));
        l->ntimers = n;
    }
    l->timers[i] = (struct timer){
        .id = ++l->next_timer_id, .when_us = loop_now_us() + delay_us, .fn = fn, .arg = arg
    };
    return l->timers[i].id;
}

void loop_cancel_timer(struct loop *l, uint64_t id)
{
    for (size_t i = 0; i < l->ntimers; i++)
        if (l->timers[i].id == id) l->timers[i].id = 0;
}

void loop_set_before_sleep(struct loop *l, loop_hook_fn *fn, void *arg)
{
    l->before_sleep = fn;
    l->before_sleep_arg = arg;
}

void loop_stop(struct loop *l)
{
    l->stop = true;
}

/* Milliseconds until the earliest timer (-1: none), rounded up so we never wake early. */
static int next_timeout_ms(struct loop *l)
{
    uint64_t now = loop_now_us(), best = UINT64_MAX;
    for (size_t i = 0; i < l->ntimers; i++)
        if (l->timers[i].id && l->timers[i].when_us < best) best = l->timers[i].when_us;
    if (best == UINT64_MAX) return -1;
    if (best <= now) return 0;
    uint64_t ms = (best - now + 999) / 1000;
    return ms > 60000 ? 60000 : (int) ms;
}

static void run_timers(struct loop *l)
{
    uint64_t now = loop_now_us();
    for (size_t i = 0; i < l->ntimers; i++) {
        struct timer t = l->timers[i];
        if (t.id == 0 || t.when_us > now) continue;
        l->timers[i].id = 0; /* one-shot: free before the call so fn may re-arm */
        t.fn(l, t.arg);
    }
}

void loop_run(struct loop *l)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    l->stop = false;
    while (!l->stop) {
        if (l->before_sleep) l->before_sleep(l, l->before_sleep_arg);
        if (l->stop) break;
        int n = epoll_wait(l->epfd, events, LOOP_MAX_EVENTS, next_timeout_ms(l));
        if (n < 0) {
            if (errno == EINTR) continue;
            log_error("loop: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if ((size_t) fd >= l->nslots || !l->slots[fd].fn) continue;
            struct fd_slot s = l->slots[fd];
            unsigned ev = 0;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ev |= LOOP_READ;
            if (events[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) ev |= LOOP_WRITE;
            ev &= s.mask ? s.mask : (LOOP_READ | LOOP_WRITE);
            if (ev) s.fn(l, fd, ev, s.arg);
        }
        run_timers(l);
    }
    if (l->before_sleep) l->before_sleep(l, l->before_sleep_arg);
}
