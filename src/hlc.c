/* SPDX-License-Identifier: MIT */
/*
 * hlc: hybrid logical clock; see include/arborkv/hlc.h and replication.md §1.
 *
 * hlc_now/hlc_recv are pure functions of their arguments and the struct; only hlc_wall_ns reads
 * the system clock. last_ns is monotonic by construction: every assignment is a max().
 */
#include "arborkv/hlc.h"

#include <assert.h>
#include <time.h>

#include "arborkv/buf.h"

void hlc_init(struct hlc *h, uint64_t last_ns, uint64_t max_skew_ns)
{
    h->last_ns = last_ns;
    h->max_skew_ns = max_skew_ns;
    h->skew_rejections = 0;
    h->max_skew_seen_ns = 0;
}

uint64_t hlc_now(struct hlc *h, uint64_t phys_ns)
{
    assert(h);
    uint64_t ts = h->last_ns + 1;
    if (phys_ns > ts) ts = phys_ns;
    h->last_ns = ts;
    return ts;
}

bool hlc_recv(struct hlc *h, uint64_t phys_ns, uint64_t remote_ns)
{
    assert(h);
    if (remote_ns > phys_ns) {
        uint64_t ahead = remote_ns - phys_ns;
        if (ahead > h->max_skew_seen_ns) h->max_skew_seen_ns = ahead;
        if (ahead > h->max_skew_ns) {
            h->skew_rejections++;
            return false;
        }
    }
    if (remote_ns > h->last_ns) h->last_ns = remote_ns;
    return true;
}

uint64_t hlc_wall_ns(void)
{
    struct timespec ts;
    (void) clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

void hlc_info(const struct hlc *h, struct buf *out)
{
    assert(h && out);
    buf_add_field(out, "hlc_last_ns", h->last_ns);
    buf_add_field(out, "clock_skew_rejections", h->skew_rejections);
    buf_add_field(out, "clock_skew_max_ns", h->max_skew_seen_ns);
}
