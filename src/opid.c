/* SPDX-License-Identifier: MIT */
/* opid: random operation ids from a pool; see include/arborkv/opid.h. */
#include "arborkv/opid.h"

#include <sodium.h>
#include <string.h>

void opid_next(struct opid_pool *p, uint8_t out[OPID_LEN])
{
    if (!p->primed || p->pos + OPID_LEN > OPID_POOL_BYTES) {
        randombytes_buf(p->bytes, sizeof(p->bytes));
        p->pos = 0;
        p->primed = 1;
    }
    memcpy(out, p->bytes + p->pos, OPID_LEN);
    sodium_memzero(p->bytes + p->pos, OPID_LEN); /* an id handed out is not kept around */
    p->pos += OPID_LEN;
}
