/* SPDX-License-Identifier: MIT */
/*
 * hlc: hybrid logical clock (replication.md §1), a pure function of (physical now, last, remote).
 *
 * Timestamps are uint64 nanoseconds since the Unix epoch. A local write reads
 * ts = max(physical_now, last + 1); a received timestamp r moves last to max(last, r) unless r is
 * more than max_skew_ns ahead of physical now, in which case it is still accepted by the caller
 * (convergence must not depend on who received what when) but the clock is not dragged forward
 * and the skew is counted. The clock never goes backwards. The physical clock is injected so tests
 * can script it (including backward jumps).
 */
#ifndef ARBORKV_HLC_H
#define ARBORKV_HLC_H

#include <stdbool.h>
#include <stdint.h>

#define HLC_DEFAULT_MAX_SKEW_NS (60ULL * 1000000000ULL) /* replication.md §1: 60 s */

struct hlc {
    uint64_t last_ns;          /* largest timestamp issued or accepted; never decreases */
    uint64_t max_skew_ns;      /* remote timestamps further ahead than this don't move last_ns */
    uint64_t skew_rejections;  /* remote timestamps that were over max_skew_ns ahead */
    uint64_t max_skew_seen_ns; /* largest (remote - physical now) seen, 0 if never ahead */
};

/* Starts the clock at last_ns (e.g. the largest stored ts, so it never goes back on restart). */
void hlc_init(struct hlc *h, uint64_t last_ns, uint64_t max_skew_ns);

/* Returns the timestamp for a local write at physical time phys_ns. */
uint64_t hlc_now(struct hlc *h, uint64_t phys_ns);

/*
 * Accounts a remote timestamp. Returns true when it was merged into the clock, false when it was
 * beyond max_skew_ns ahead of phys_ns (clock left alone, counters updated).
 */
bool hlc_recv(struct hlc *h, uint64_t phys_ns, uint64_t remote_ns);

/* Reads CLOCK_REALTIME in nanoseconds (the physical clock of the running server). */
uint64_t hlc_wall_ns(void);

struct buf;
/* Appends the clock's INFO lines: hlc_last_ns, clock_skew_rejections, clock_skew_max_ns. */
void hlc_info(const struct hlc *h, struct buf *out);

#endif
