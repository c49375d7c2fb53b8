/* SPDX-License-Identifier: MIT */
/* Unit tests for hlc: scripted physical clock, including backward jumps and skew. */
#include "arborkv/hlc.h"

#include "harness.h"

#define SEC 1000000000ULL

TEST(now_follows_physical_clock)
{
    struct hlc h;
    hlc_init(&h, 0, HLC_DEFAULT_MAX_SKEW_NS);
    ASSERT_U64_EQ(hlc_now(&h, 100 * SEC), 100 * SEC);
    ASSERT_U64_EQ(hlc_now(&h, 101 * SEC), 101 * SEC);
}

TEST(now_is_strictly_increasing_on_same_or_backward_clock)
{
    struct hlc h;
    hlc_init(&h, 0, HLC_DEFAULT_MAX_SKEW_NS);
    uint64_t a = hlc_now(&h, 100 * SEC);
    uint64_t b = hlc_now(&h, 100 * SEC);
    uint64_t c = hlc_now(&h, 50 * SEC); /* the wall clock jumped back */
    ASSERT(b == a + 1);
    ASSERT(c == b + 1);
}

TEST(init_from_stored_max_never_goes_back)
{
    struct hlc h;
    hlc_init(&h, 500 * SEC, HLC_DEFAULT_MAX_SKEW_NS);
    ASSERT_U64_EQ(hlc_now(&h, 10 * SEC), 500 * SEC + 1);
}

TEST(recv_within_skew_moves_clock)
{
    struct hlc h;
    hlc_init(&h, 0, 60 * SEC);
    ASSERT(hlc_recv(&h, 100 * SEC, 130 * SEC));
    ASSERT_U64_EQ(h.last_ns, 130 * SEC);
    ASSERT_U64_EQ(hlc_now(&h, 100 * SEC), 130 * SEC + 1); /* causally after the remote write */
    ASSERT_U64_EQ(h.max_skew_seen_ns, 30 * SEC);
    ASSERT_U64_EQ(h.skew_rejections, 0);
}

TEST(recv_beyond_skew_leaves_clock)
{
    struct hlc h;
    hlc_init(&h, 0, 60 * SEC);
    ASSERT(!hlc_recv(&h, 100 * SEC, 100 * SEC + 3600 * SEC));
    ASSERT_U64_EQ(h.last_ns, 0);
    ASSERT_U64_EQ(h.skew_rejections, 1);
    ASSERT_U64_EQ(h.max_skew_seen_ns, 3600 * SEC);
    ASSERT_U64_EQ(hlc_now(&h, 100 * SEC), 100 * SEC);
}

TEST(recv_older_is_merged_without_effect)
{
    struct hlc h;
    hlc_init(&h, 0, 60 * SEC);
    (void) hlc_now(&h, 200 * SEC);
    ASSERT(hlc_recv(&h, 200 * SEC, 10 * SEC));
    ASSERT_U64_EQ(h.last_ns, 200 * SEC);
    ASSERT_U64_EQ(h.max_skew_seen_ns, 0);
}

TEST(wall_clock_is_plausible)
{
    uint64_t t = hlc_wall_ns();
    ASSERT(t > 1600000000ULL * SEC); /* after 2020 */
}

TEST_LIST{
    TEST_ENTRY(now_follows_physical_clock),
    TEST_ENTRY(now_is_strictly_increasing_on_same_or_backward_clock),
    TEST_ENTRY(init_from_stored_max_never_goes_back),
    TEST_ENTRY(recv_within_skew_moves_clock),
    TEST_ENTRY(recv_beyond_skew_leaves_clock),
    TEST_ENTRY(recv_older_is_merged_without_effect),
    TEST_ENTRY(wall_clock_is_plausible),
};

TEST_MAIN()
