/* SPDX-License-Identifier: MIT */
/* kv_apply: applying a record from elsewhere; see include/arborkv/kv_apply.h. */
#include "arborkv/kv_apply.h"

#include <assert.h>

#include "arborkv/hlc.h"
#include "arborkv/lww.h"
#include "arborkv/store.h"

/* store_put_if's condition for kv_apply_remote; arg is the store. */
static int beats_stored(void *arg, const struct store_rec *cur, const struct store_rec *in)
{
    if (!cur) /* its key may have had a newer tombstone, purged since */
        return in->ts <= store_purge_horizon(arg) ? KV_PURGED : 0;
    int c = lww_cmp(in, cur);
    return c > 0 ? 0 : c == 0 ? KV_SAME : KV_OLDER;
}

int kv_apply_remote(struct hlc *clock, struct store *st, const struct store_rec *in)
{
    assert(clock && st && in && in->key_len > 0);
    (void) hlc_recv(clock, hlc_wall_ns(), in->ts);
    int rc = store_put_if(st, in, beats_stored, st);
    return rc == 0 ? KV_APPLIED : rc;
}
