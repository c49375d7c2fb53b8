/* SPDX-License-Identifier: MIT */
/*
 * lww: the last-write-wins order of records (replication.md §1).
 *
 * Applying a record by this order is kv_apply_remote's (kv_apply.h), the one place that does it.
 *
 * A beats B iff (A.ts, A.op_id) > (B.ts, B.op_id): ts as unsigned, op_id by memcmp. Equal pairs
 * are the same write. Should equal pairs carry different contents (a damaged or hand-edited
 * database), a tombstone beats a value and otherwise the larger value (memcmp, then length)
 * wins, so peers still converge.
 */
#ifndef ARBORKV_LWW_H
#define ARBORKV_LWW_H

#include "arborkv/record.h"

/* Returns >0 when a beats b, <0 when b beats a, 0 when they are the same record. */
int lww_cmp(const struct store_rec *a, const struct store_rec *b);

#endif
