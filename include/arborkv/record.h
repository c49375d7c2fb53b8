/* SPDX-License-Identifier: MIT */
/*
 * record: the unit every layer passes around (replication.md §1): key, value or tombstone, HLC
 * timestamp, operation id. A header of its own so the modules that only describe records (the
 * Merkle tree, the codecs) need not depend on the store that keeps them.
 */
#ifndef ARBORKV_RECORD_H
#define ARBORKV_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_OP_ID_BYTES 16 /* replication.md §1 */

/* One record. Pointers are [borrow]: for a record read from the store, valid until the next call
 * into the store. */
struct store_rec {
    const uint8_t *key;               /* key bytes */
    size_t key_len;                   /* bytes */
    const uint8_t *value;             /* value bytes; NULL when tombstone (or empty value) */
    size_t value_len;                 /* bytes; 0 for a tombstone */
    bool tombstone;                   /* true: a delete marker, invisible to clients */
    uint64_t ts;                      /* HLC nanoseconds since the Unix epoch */
    uint8_t op_id[STORE_OP_ID_BYTES]; /* operation id */
};

#endif
