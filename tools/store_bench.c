/* SPDX-License-Identifier: MIT */
/*
 * store_bench: micro-benchmark of the store module alone (no sockets), in ns per operation.
 *
 *   store_bench [-n KEYS] [-b BATCH] [-v VALUE_BYTES] [-k KEY_BYTES] [--memory] [--full] [--tree]
 *               [-d DIR]
 *
 * Defaults: 1,000,000 keys, transactions of 50 writes (group commit of a loop turn under
 * redis-benchmark -c 50), 3-byte values (redis-benchmark's default -d), 16-byte keys, the file
 * engine with synchronous=NORMAL in a fresh temporary directory that is removed at exit.
 * Phases, each over the whole key set in a random order:
 *   insert      put of a new key (batches of BATCH in one transaction each)
 *   overwrite   put of an existing live key
 *   get-hit     store_get of an existing key, outside any transaction
 *   get-miss    store_get of an absent key (one that sorts next to a present one)
 *   scan        store_scan over everything, KEYS_ONLY | LIVE, per key
 *   reopen      store_close + store_open of the full database (live count and max ts scan)
 * Not part of the test suite; built by meson as build/tools/store_bench.
 */
#include "arborkv/merkle.h"
#include "arborkv/store.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "arborkv/mem.h"

struct opts {
    size_t keys;        /* distinct keys */
    size_t batch;       /* writes per transaction */
    size_t value_bytes; /* bytes per value */
    size_t key_bytes;   /* bytes per key, >= 10 */
    bool memory;        /* STORE_ENGINE_MEMORY instead of the file engine */
    bool full;          /* STORE_DURABLE_POWER (synchronous=FULL) */
    bool tree;          /* keep a 16x4 Merkle tree attached, as the server does */
    const char *dir;    /* database directory; NULL = a temporary one */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    (void) clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

/* xorshift64*: a fixed sequence, so runs are comparable. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* Key i: "k" + 8 hex digits of i + '0' padding to key_bytes. A miss key has the same bytes but
 * ends in 'x', so it lands next to a hit key in the b-tree, not past the last one. */
static void make_key(uint8_t *k, size_t key_bytes, size_t i, char last)
{
    char tmp[16];
    (void) snprintf(tmp, sizeof(tmp), "k%08zx", i);
    memset(k, '0', key_bytes);
    memcpy(k, tmp, 9);
    k[key_bytes - 1] = (uint8_t) last;
}

static const char *tmp_dir; /* temporary database directory to remove at exit, or NULL */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    UNUSED(sb);
    UNUSED(flag);
    UNUSED(ftw);
    return remove(path);
}

static void remove_tmp_dir(void)
{
    if (tmp_dir) (void) nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "store_bench: %s: %s\n", what, strerror(-rc));
    exit(1);
}

static void report(const char *phase, size_t ops, uint64_t ns)
{
    printf("%-10s %10zu ops %9.1f ns/op %12.0f ops/s\n", phase, ops, (double) ns / (double) ops,
           (double) ops * 1e9 / (double) ns);
}

static int count_key(void *arg, const struct store_rec *rec)
{
    UNUSED(rec);
    (*(size_t *) arg)++;
    return 0;
}

static struct store *open_store(const struct opts *o, const char *dir)
{
    struct store *st = NULL;
    char err[512];
    int rc = store_open(&st, o->memory ? STORE_ENGINE_MEMORY : STORE_ENGINE_SQLITE, dir,
                        o->full ? STORE_DURABLE_POWER : STORE_DURABLE_PROCESS, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "store_bench: open: %s\n", err);
        exit(1);
    }
    if (o->tree) {
        static struct merkle *m; /* one store at a time; freed at exit by the OS */
        merkle_free(m);
        if (merkle_new(&m, MERKLE_DEFAULT_FANOUT, MERKLE_DEFAULT_DEPTH) < 0 ||
            store_attach_tree(st, m) < 0) {
            fprintf(stderr, "store_bench: cannot attach the Merkle tree\n");
            exit(1);
        }
    }
    return st;
}

/* Writes every key once, in the order of perm, BATCH per transaction. */
static uint64_t put_all(struct store *st, const struct opts *o, const size_t *perm, uint8_t *key,
                        const uint8_t *value, uint64_t *ts)
{
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < o->keys; i += o->batch) {
        int rc = store_begin(st);
        if (rc < 0) die("begin", rc);
        for (size_t j = i; j < i + o->batch && j < o->keys; j++) {
            make_key(key, o->key_bytes, perm[j], '0');
            struct store_rec rec = { .key = key,
                                     .key_len = o->key_bytes,
                                     .value = value,
                                     .value_len = o->value_bytes,
                                     .ts = ++*ts };
            memcpy(rec.op_id, ts, sizeof(*ts));
            rc = store_put(st, &rec);
            if (rc < 0) die("put", rc);
        }
        rc = store_commit(st);
        if (rc < 0) die("commit", rc);
        store_maintain(st); /* as the server's loop does after each turn */
    }
    return now_ns() - t0;
}

static uint64_t get_all(struct store *st, const struct opts *o, const size_t *perm, uint8_t *key,
                        char last, int want)
{
    uint64_t t0 = now_ns();
    size_t bytes = 0;
    for (size_t i = 0; i < o->keys; i++) {
        make_key(key, o->key_bytes, perm[i], last);
        const uint8_t *v;
        size_t n;
        int rc = store_get(st, key, o->key_bytes, &v, &n);
        if (rc != want) die("get: unexpected result", rc < 0 ? rc : -EINVAL);
        if (rc == 1) bytes += n;
    }
    uint64_t ns = now_ns() - t0;
    if (want == 1 && bytes != o->keys * o->value_bytes) die("get: wrong sizes", -EINVAL);
    return ns;
}

int main(int argc, char **argv)
{
    struct opts o = { .keys = 1000000, .batch = 50, .value_bytes = 3, .key_bytes = 16 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "-n") && more)
            o.keys = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "-b") && more)
            o.batch = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "-v") && more)
            o.value_bytes = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "-k") && more)
            o.key_bytes = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "-d") && more)
            o.dir = argv[++i];
        else if (!strcmp(a, "--memory"))
            o.memory = true;
        else if (!strcmp(a, "--full"))
            o.full = true;
        else if (!strcmp(a, "--tree"))
            o.tree = true;
        else {
            fprintf(stderr, "usage: store_bench [-n KEYS] [-b BATCH] [-v VALUE_BYTES] "
                            "[-k KEY_BYTES] [--memory] [--full] [--tree] [-d DIR]\n");
            return 2;
        }
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "store_bench: libsodium failed to initialize\n");
        return 1;
    }
    if (o.keys == 0 || o.batch == 0 || o.key_bytes < 10) {
        fprintf(stderr, "store_bench: need -n > 0, -b > 0, -k >= 10\n");
        return 2;
    }

    static char tmpl[] = "/tmp/store-bench-XXXXXX"; /* static: removed by atexit */
    const char *dir = o.dir;
    if (!dir && !o.memory) {
        dir = mkdtemp(tmpl);
        if (!dir) die("mkdtemp", -errno);
        tmp_dir = dir;
        (void) atexit(remove_tmp_dir);
    }

    size_t *perm = xcalloc(o.keys, sizeof(*perm));
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < o.keys; i++)
        perm[i] = i;
    for (size_t i = o.keys - 1; i > 0; i--) {
        size_t j = (size_t) (rng_next(&seed) % (i + 1));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    uint8_t *key = xmalloc(o.key_bytes);
    uint8_t *value = xmalloc(o.value_bytes ? o.value_bytes : 1);
    memset(value, 'v', o.value_bytes);
    uint64_t ts = 1700000000000000000ULL;

    printf("store_bench: %zu keys of %zu bytes, %zu-byte values, %zu writes per transaction, "
           "%s engine%s\n",
           o.keys, o.key_bytes, o.value_bytes, o.batch, o.memory ? "memory" : "sqlite",
           o.memory ? ""
           : o.full ? ", synchronous=FULL"
                    : ", synchronous=NORMAL");

    struct store *st = open_store(&o, dir);
    report("insert", o.keys, put_all(st, &o, perm, key, value, &ts));
    for (size_t i = o.keys - 1; i > 0; i--) { /* a different order for the overwrite */
        size_t j = (size_t) (rng_next(&seed) % (i + 1));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    report("overwrite", o.keys, put_all(st, &o, perm, key, value, &ts));
    if (store_live_count(st) != o.keys) die("live count", -EINVAL);
    report("get-hit", o.keys, get_all(st, &o, perm, key, '0', 1));
    report("get-miss", o.keys, get_all(st, &o, perm, key, 'x', 0));

    size_t seen = 0;
    uint64_t t0 = now_ns();
    int rc = store_scan(st, NULL, 0, NULL, 0, STORE_SCAN_KEYS_ONLY | STORE_SCAN_LIVE, count_key,
                        &seen);
    if (rc != 0 || seen != o.keys) die("scan", rc ? rc : -EINVAL);
    report("scan", seen, now_ns() - t0);

    if (!o.memory) {
        store_close(st);
        t0 = now_ns();
        st = open_store(&o, dir);
        uint64_t ns = now_ns() - t0;
        if (store_live_count(st) != o.keys) die("live count after reopen", -EINVAL);
        printf("%-10s %10zu keys %8.1f ms\n", "reopen", o.keys, (double) ns / 1e6);
    }
    store_close(st);
    free(perm);
    free(key);
    free(value);
    return 0;
}
