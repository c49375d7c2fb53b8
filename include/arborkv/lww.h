/* SPDX-License-Identifier: MIT */
/*
 * lww: the last-write-wins order of records (replication.md §1), shared by event apply and
 * anti-entropy.
 *
 * A beats B iff (A.ts, A.op_id) > (B.ts, B.op_id): ts as unsigned, op_id by memcmp. Equal pairs
 * are the same write. Should equal pairs carry different contents (a damaged or hand-edited
 * database), a tombstone beats a value and otherwise the larger value (memcmp, then length)
 * wins, so peers still converge.
 */
#ifndef ARBORKV_LWW_H
#define ARBORKV_LWW_H

#include "arborkv/store.h"

/* Returns >0 when a beats b, <0 when b beats a, 0 when they are the same record. */
int lww_cmp(const struct store_rec *a, const struct store_rec *b);

enum lww_result { LWW_APPLIED = 1, LWW_SAME = 2, LWW_OLDER = 3, LWW_PURGED = 4 };

/*
 * Stores a record received from a peer (event or repair) iff it beats the stored one, in the
 * store's open transaction (opened if needed; the caller commits). Returns LWW_APPLIED, LWW_SAME
 * (the stored record is this one), LWW_OLDER (the stored record wins), LWW_PURGED (no record is
 * stored for the key and in->ts is not above the store's purge horizon: a tombstone that beat it
 * may have been purged here, so it is refused; docs/anti-entropy.md), or -EIO.
 */
int lww_apply(struct store *st, const struct store_rec *in);

#endif
