/* SPDX-License-Identifier: MIT */
/*
 * harness: a tiny unit-test runner in the libuv style.
 *
 * Each test file defines its cases with TEST(name) and lists them in a TEST_LIST; main() comes
 * from TEST_MAIN(). Every case runs in a forked child with an alarm() timeout, so an assertion,
 * a crash or a sanitizer abort fails that case only. The runner prints one line per case and a
 * closing "N passed, N failed" line, and exits 1 on any failure.
 *
 * ARBORKV_TEST=<name> runs only the case of that name. A name that matches no case of the file
 * (a typo, a case of another file, an empty value) is an error: the runner names the filter, lists
 * the cases and exits 1, so a filter can never pass by running nothing. Under meson, name the
 * file's test as well: ARBORKV_TEST=<case> meson test -C build <file without test_>.
 */
#ifndef ARBORKV_TEST_HARNESS_H
#define ARBORKV_TEST_HARNESS_H

#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_TIMEOUT_S 60

#define ASSERT_FAIL_(fmt, ...)                                                \
    do {                                                                      \
        fprintf(stderr, "%s:%d: " fmt "\n", __FILE__, __LINE__, __VA_ARGS__); \
        abort();                                                              \
    } while (0)
#define ASSERT(expr)                                              \
    do {                                                          \
        if (!(expr)) ASSERT_FAIL_("assertion failed: %s", #expr); \
    } while (0)
#define ASSERT_EQ(a, b)                                                              \
    do {                                                                             \
        long long a_ = (long long) (a), b_ = (long long) (b);                        \
        if (a_ != b_) ASSERT_FAIL_("%s == %s failed: %lld != %lld", #a, #b, a_, b_); \
    } while (0)
#define ASSERT_U64_EQ(a, b)                                                                     \
    do {                                                                                        \
        uint64_t a_ = (uint64_t) (a), b_ = (uint64_t) (b);                                      \
        if (a_ != b_) ASSERT_FAIL_("%s == %s failed: %" PRIu64 " != %" PRIu64, #a, #b, a_, b_); \
    } while (0)
#define ASSERT_OK(rc) ASSERT_EQ((rc), 0)
#define ASSERT_STR_EQ(a, b)                                                    \
    do {                                                                       \
        const char *a_ = (a), *b_ = (b);                                       \
        if (strcmp(a_, b_) != 0)                                               \
            ASSERT_FAIL_("%s == %s failed: \"%s\" != \"%s\"", #a, #b, a_, b_); \
    } while (0)
#define ASSERT_MEM_EQ(p, q, n)                                                    \
    do {                                                                          \
        if (memcmp((p), (q), (n)) != 0)                                           \
            ASSERT_FAIL_("%s == %s failed over %zu bytes", #p, #q, (size_t) (n)); \
    } while (0)
/* Compares a (pointer, length) pair with a C string literal, byte for byte. */
#define ASSERT_SLICE_EQ(ptr, len, lit)                                                  \
    do {                                                                                \
        size_t l_ = strlen(lit);                                                        \
        if ((size_t) (len) != l_ || memcmp((ptr), (lit), l_) != 0)                      \
            ASSERT_FAIL_("%s == \"%s\" failed: got \"%.*s\"", #ptr, (lit), (int) (len), \
                         (const char *) (ptr));                                         \
    } while (0)

/* Temporary directories of the cases that need files: test_make_tmp fills root (at least 64
 * bytes) with a new /tmp/arborkv-<tag>-XXXXXX directory; test_rm_tmp removes it and everything
 * under it, making directories a case left unwritable writable again first. */
static inline void test_make_tmp(char *root, size_t n, const char *tag)
{
    snprintf(root, n, "/tmp/arborkv-%s-XXXXXX", tag);
    ASSERT(mkdtemp(root) != NULL);
}

static inline int test_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    (void) chmod(path, 0700);
    return remove(path) == 0 ? 0 : -1;
}

static inline void test_rm_tmp(const char *root)
{
    (void) chmod(root, 0700);
    ASSERT_OK(nftw(root, test_rm_one, 16, FTW_DEPTH | FTW_PHYS));
}

#define TEST(name) static void test_##name(void)

struct test_case {
    const char *name;
    void (*fn)(void);
};

#define TEST_ENTRY(name)   \
    {                      \
#name, test_##name \
    }
#define TEST_LIST static const struct test_case test_cases[] =

static inline int test_run_all(const struct test_case *cases, size_t n)
{
    const char *only = getenv("ARBORKV_TEST");
    size_t passed = 0, failed = 0, matched = 0;
    for (size_t i = 0; i < n; i++) {
        if (only && strcmp(only, cases[i].name) != 0) continue;
        matched++;
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            alarm(TEST_TIMEOUT_S);
            cases[i].fn();
            /* exit(), not _exit(): LeakSanitizer checks for leaks in the atexit path. */
            exit(0);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0) {
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            passed++;
            printf("ok   %s\n", cases[i].name);
        } else {
            failed++;
            if (WIFSIGNALED(status))
                printf("FAIL %s (signal %d)\n", cases[i].name, WTERMSIG(status));
            else
                printf("FAIL %s (exit %d)\n", cases[i].name, WEXITSTATUS(status));
        }
    }
    if (only && matched == 0) {
        fprintf(stderr, "ARBORKV_TEST=\"%s\" matches no test case here; the cases are:\n", only);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "  %s\n", cases[i].name);
        return 1;
    }
    printf("%zu passed, %zu failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define TEST_MAIN()                                                                  \
    int main(void)                                                                   \
    {                                                                                \
        return test_run_all(test_cases, sizeof(test_cases) / sizeof(test_cases[0])); \
    }

#endif
