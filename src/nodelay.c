/* SPDX-License-Identifier: MIT */
/*
 * nodelay: TCP_NODELAY on the sockets libraries open for us (paho's broker connection).
 *
 * paho.mqtt.c has no option for it, and without it small MQTT packets wait for Nagle's algorithm
 * to meet the peer's delayed ACK: events and PUBACKs were seen arriving in bursts 40 ms apart,
 * which made the write-to-visible latency p90 43 ms instead of about 1 ms (docs/benchmarks.md).
 * This file defines connect() in the executable; the dynamic linker binds the libraries' calls to
 * it (the executable comes first in symbol lookup), and it forwards to the next definition
 * (libc's, or a sanitizer's interceptor) after setting TCP_NODELAY on TCP sockets. It is linked
 * into the arborkv executable only, never into the core library or the tests.
 */
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <sys/socket.h>

typedef int connect_fn(int, const struct sockaddr *, socklen_t);

/* Exported on purpose (see above); a prototype keeps -Wmissing-prototypes quiet. */
int connect(int fd, const struct sockaddr *addr, socklen_t len);

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    static connect_fn *cached; /* paho's threads may race here: atomics, same value */
    connect_fn *next = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (!next) {
        next = (connect_fn *) dlsym(RTLD_NEXT, "connect");
        if (!next) {
            errno = ENOSYS;
            return -1;
        }
        __atomic_store_n(&cached, next, __ATOMIC_RELEASE);
    }
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        int type = 0, one = 1;
        socklen_t tlen = sizeof(type);
        /* Best effort: a socket that refuses the option still connects. */
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM)
            (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return next(fd, addr, len);
}
