/* SPDX-License-Identifier: MIT */
/*
 * loop: a single-threaded epoll event loop with fd handlers, one-shot timers and a before-sleep
 * hook (where group commit and reply flushing happen, as in redis's beforeSleep).
 *
 * THREADING: every function must be called from the loop's own thread. Other threads wake the
 * loop by writing to an eventfd they registered with loop_add_fd (see repl.c, later issue).
 * Time: loop_now_us() is CLOCK_MONOTONIC microseconds; timers use it and nothing else.
 */
#ifndef ARBORKV_LOOP_H
#define ARBORKV_LOOP_H

#include <stdint.h>

#define LOOP_READ  1u /* fd readable (EPOLLIN) */
#define LOOP_WRITE 2u /* fd writable (EPOLLOUT) */

struct loop;

typedef void loop_fd_fn(struct loop *l, int fd, unsigned events, void *arg);
typedef void loop_timer_fn(struct loop *l, void *arg);
typedef void loop_hook_fn(struct loop *l, void *arg);

/* Returns **new** loop (release with loop_free), or NULL with errno set (epoll_create1 failed). */
struct loop *loop_new(void);
/* Frees the loop; registered fds are not closed (their owners close them). NULL-safe. */
void loop_free(struct loop *l);

/* Registers fd for mask (LOOP_READ|LOOP_WRITE, may be 0). Returns 0 or -errno. */
int loop_add_fd(struct loop *l, int fd, unsigned mask, loop_fd_fn *fn, void *arg);
/* Changes the event mask of a registered fd. Returns 0 or -errno. */
int loop_mod_fd(struct loop *l, int fd, unsigned mask);
/* Unregisters fd; pending events for it in the current batch are dropped. */
void loop_del_fd(struct loop *l, int fd);

/* Calls fn once, delay_us from now. Returns a timer id (> 0) for loop_cancel_timer. */
uint64_t loop_add_timer(struct loop *l, uint64_t delay_us, loop_timer_fn *fn, void *arg);
void loop_cancel_timer(struct loop *l, uint64_t id);

/* Sets the hook called before every wait for events (NULL to remove). */
void loop_set_before_sleep(struct loop *l, loop_hook_fn *fn, void *arg);

/* Dispatches events until loop_stop() is called; the before-sleep hook runs once more then. */
void loop_run(struct loop *l);
void loop_stop(struct loop *l);

/* Monotonic microseconds. */
uint64_t loop_now_us(void);

#endif
