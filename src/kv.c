/* SPDX-License-Identifier: MIT */
/* kv: local writes and the live-data digest; see include/arborkv/kv.h. */
#include "arborkv/kv.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "arborkv/hlc.h"
#include "arborkv/opid.h"
#include "arborkv/repl.h"
#include "arborkv/store.h"

int kv_write(const struct kv *kv, enum codec_op op, const uint8_t *key, size_t key_len,
             const uint8_t *value, size_t value_len, uint64_t ts)
{
    assert(kv && kv->store && kv->hlc && kv->opids && key && key_len > 0 &&
           (op == CODEC_OP_DEL || value || value_len == 0));
    bool tombstone = op == CODEC_OP_DEL;
    int rc = store_begin(kv->store);
    if (rc == 0) {
        struct store_rec rec = { .key = key,
                                 .key_len = key_len,
                                 .value = tombstone ? NULL : value,
                                 .value_len = tombstone ? 0 : value_len,
                                 .tombstone = tombstone,
                                 .ts = ts ? ts : hlc_now(kv->hlc, hlc_wall_ns()) };
        opid_next(kv->opids, rec.op_id);
        rc = store_put_local(kv->store, &rec);
        if (rc == 0) repl_record(kv->repl, op, &rec);
    }
    /* On failure the store has marked the turn's transaction failed: the turn (turn.h) rolls
     * it back and withdraws every reply of the turn instead of committing. */
    return rc;
}

struct hash_walk {
    crypto_generichash_state st; /* BLAKE2b-256 over the selected live records */
    uint64_t n;                  /* records hashed */
};

static void hash_u64(crypto_generichash_state *st, uint64_t v)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t) (v >> (8 * i));
    (void) crypto_generichash_update(st, le, sizeof(le));
}

static int hash_record(void *arg, const struct store_rec *rec)
{
    struct hash_walk *w = arg;
    hash_u64(&w->st, rec->key_len);
    (void) crypto_generichash_update(&w->st, rec->key, rec->key_len);
    hash_u64(&w->st, rec->value_len);
    if (rec->value_len) (void) crypto_generichash_update(&w->st, rec->value, rec->value_len);
    w->n++;
    return 0;
}

int kv_live_digest(struct store *st, const uint8_t *prefix, size_t prefix_len,
                   uint8_t out[KV_DIGEST_LEN])
{
    struct hash_walk w = { .n = 0 };
    memset(out, 0, KV_DIGEST_LEN);
    if (crypto_generichash_init(&w.st, NULL, 0, KV_DIGEST_LEN) != 0) return -EIO;
    int rc = store_scan(st, prefix, prefix_len, NULL, 0, STORE_SCAN_LIVE, hash_record, &w);
    if (rc < 0) return rc;
    if (w.n) (void) crypto_generichash_final(&w.st, out, KV_DIGEST_LEN);
    return 0;
}
