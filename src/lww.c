/* SPDX-License-Identifier: MIT */
/* lww: the last-write-wins order; see include/arborkv/lww.h. */
#include "arborkv/lww.h"

#include <string.h>

int lww_cmp(const struct store_rec *a, const struct store_rec *b)
{
    if (a->ts != b->ts) return a->ts > b->ts ? 1 : -1;
    int c = memcmp(a->op_id, b->op_id, STORE_OP_ID_BYTES);
    if (c) return c > 0 ? 1 : -1;
    /* Same (ts, op_id): normally the same write. Otherwise a deterministic tie-break. */
    if (a->tombstone != b->tombstone) return a->tombstone ? 1 : -1;
    if (a->tombstone) return 0;
    size_t n = a->value_len < b->value_len ? a->value_len : b->value_len;
    c = n ? memcmp(a->value, b->value, n) : 0;
    if (c) return c > 0 ? 1 : -1;
    if (a->value_len != b->value_len) return a->value_len > b->value_len ? 1 : -1;
    return 0;
}
