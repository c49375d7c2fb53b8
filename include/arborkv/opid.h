/* SPDX-License-Identifier: MIT */
/*
 * opid: random 16-byte operation ids (replication.md §1), drawn from a pool.
 *
 * Every write needs one; asking the kernel (getrandom) for 16 bytes per write cost ~4% of a SET.
 * The pool is refilled OPID_POOL_BYTES at a time from libsodium's randombytes_buf (the kernel's
 * CSPRNG), so ids stay uniformly random and unpredictable while the syscall is paid once per
 * 256 writes. The pool is wiped after use. THREADING: one pool per thread (the loop owns one).
 */
#ifndef ARBORKV_OPID_H
#define ARBORKV_OPID_H

#include <stddef.h>
#include <stdint.h>

#define OPID_LEN        16
#define OPID_POOL_BYTES 4096

struct opid_pool {
    uint8_t bytes[OPID_POOL_BYTES];
    size_t pos; /* next unused byte; OPID_POOL_BYTES (or 0 on a zeroed pool) means refill */
    int primed; /* 0 until the first refill */
};

/* Writes a fresh random id to out. The pool may start zeroed (static or calloc). */
void opid_next(struct opid_pool *p, uint8_t out[OPID_LEN]);

#endif
