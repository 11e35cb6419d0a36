/* The kernel's floor for a message relay on this machine: what any signaling server, however
 * cheap its own code, must at least pay when each message is its own TCP write.
 *
 * A relay that does nothing but copy bytes (no WebSocket, no JSON, no rooms) sits between
 * CONNS client connections over loopback TCP, paired 0<->1, 2<->3, ...; a load side sends
 * messages at a paced total RATE, each with one write() on the sending connection, and reads
 * them on the partner, as bench/signal-load does against a real server (same sizes: an offer
 * of 1 KiB every 5th message, ~200-byte candidates otherwise). Everything is plain epoll and
 * blocking-free reads, so the figures are the kernel's cost, not a runtime's.
 *
 *   cc -O2 -pthread -o /tmp/relay_floor bench/tools/relay_floor.c
 *   /tmp/relay_floor CONNS RATE SECONDS [RELAY_THREADS]
 *   /tmp/relay_floor 1000 100000 10 1
 *
 * Prints one line: offered and delivered messages/s, loss (not delivered within a 2 s drain),
 * latency p50/p99, and CPU seconds and µs per message of the relay and of the load side
 * (each thread's own CLOCK_THREAD_CPUTIME_ID). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LAT (1 << 22)

static int conns, relay_threads = 1;
static double rate, seconds;
static int *relay_fd;                 /* relay side, index = client index */
static int *client_fd;                /* load side */
static volatile int stop_relay;
/* CPU seconds each thread spent while messages flowed (from the first send to its exit). */
static double relay_cpu[16], send_cpu, recv_cpu;
static volatile int started;
static uint64_t sent, received;
static double *lat;
static size_t nlat;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* This thread's CPU time, in seconds. */
static double thread_cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Relay thread k owns the pairs whose index % relay_threads == k. */
static void *relay(void *arg) {
    long k = (long)arg;
    int ep = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        if ((i / 2) % relay_threads != k) continue;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, relay_fd[i], &ev)) die("epoll_ctl");
    }
    static __thread char buf[65536];
    struct epoll_event evs[256];
    while (!started) usleep(1000);
    double c0 = thread_cpu_s();
    while (!stop_relay) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u32;
            ssize_t r = recv(relay_fd[i], buf, sizeof buf, MSG_DONTWAIT);
            if (r <= 0) continue;
            int out = relay_fd[i ^ 1];
            for (ssize_t off = 0; off < r;) {
                ssize_t w = send(out, buf + off, (size_t)(r - off), 0); /* blocking */
                if (w < 0) die("relay send");
                off += w;
            }
        }
    }
    relay_cpu[k] = thread_cpu_s() - c0;
    return NULL;
}

/* Message: 4-byte length, 8-byte send time (µs, as a double), padding to the length. */
static void *sender(void *arg) {
    (void)arg;
    started = 1;
    double c0 = thread_cpu_s();
    static char msg[1024];
    memset(msg, 'x', sizeof msg);
    double start = now_us(), end = start + seconds * 1e6;
    uint64_t k = 0;
    for (;;) {
        double t = now_us();
        if (t >= end) break;
        uint64_t due = (uint64_t)((t - start) * rate / 1e6);
        if (k >= due) {
            struct timespec ts = {0, 50000}; /* 50 µs */
            nanosleep(&ts, NULL);
            continue;
        }
        for (; k < due; k++) {
            uint32_t len = (k % 5 == 4) ? 1024 : 200;
            memcpy(msg, &len, 4);
            double st = now_us();
            memcpy(msg + 4, &st, 8);
            int fd = client_fd[(k % (uint64_t)(conns / 2)) * 2]; /* even clients send */
            for (uint32_t off = 0; off < len;) {
                ssize_t w = send(fd, msg + off, len - off, 0);
                if (w < 0) die("send");
                off += (uint32_t)w;
            }
        }
    }
    __atomic_store_n(&sent, k, __ATOMIC_SEQ_CST);
    send_cpu = thread_cpu_s() - c0;
    return NULL;
}

struct rxbuf { uint32_t have; char b[2048]; };

static void *receiver(void *arg) {
    (void)arg;
    struct rxbuf *rx = calloc((size_t)conns, sizeof *rx);
    int ep = epoll_create1(0);
    for (int i = 1; i < conns; i += 2) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, client_fd[i], &ev)) die("epoll_ctl");
    }
    struct epoll_event evs[256];
    while (!started) usleep(1000);
    double c0 = thread_cpu_s();
    double deadline = now_us() + (seconds + 2.0) * 1e6;
    while (now_us() < deadline) {
        int n = epoll_wait(ep, evs, 256, 50);
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u32;
            struct rxbuf *b = &rx[i];
            ssize_t r = recv(client_fd[i], b->b + b->have, sizeof b->b - b->have, MSG_DONTWAIT);
            if (r <= 0) continue;
            b->have += (uint32_t)r;
            double t = now_us();
            uint32_t off = 0;
            while (b->have - off >= 12) {
                uint32_t len;
                memcpy(&len, b->b + off, 4);
                if (b->have - off < len) break;
                double st;
                memcpy(&st, b->b + off + 4, 8);
                if (nlat < MAX_LAT) lat[nlat++] = t - st;
                received++;
                off += len;
            }
            memmove(b->b, b->b + off, b->have - off);
            b->have -= off;
        }
    }
    recv_cpu = thread_cpu_s() - c0;
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CONNS RATE SECONDS [RELAY_THREADS]\n", argv[0]);
        return 2;
    }
    conns = atoi(argv[1]) & ~1;
    rate = atof(argv[2]);
    seconds = atof(argv[3]);
    if (argc > 4) relay_threads = atoi(argv[4]);
    if (conns < 2 || relay_threads < 1 || relay_threads > 16) return 2;
    struct rlimit rl = {65536, 65536};
    setrlimit(RLIMIT_NOFILE, &rl);
    lat = malloc(sizeof(double) * MAX_LAT);
    relay_fd = calloc((size_t)conns, sizeof(int));
    client_fd = calloc((size_t)conns, sizeof(int));

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) die("listen");
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    for (int i = 0; i < conns; i++) { /* connect then accept: indices match */
        client_fd[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(client_fd[i], (struct sockaddr *)&a, sizeof a)) die("connect");
        relay_fd[i] = accept(ls, NULL, NULL);
        if (relay_fd[i] < 0) die("accept");
        nodelay(client_fd[i]);
        nodelay(relay_fd[i]);
    }

    pthread_t rt[16], st, rc;
    for (long k = 0; k < relay_threads; k++) pthread_create(&rt[k], NULL, relay, (void *)k);
    pthread_create(&rc, NULL, receiver, NULL);
    pthread_create(&st, NULL, sender, NULL);
    pthread_join(st, NULL);
    pthread_join(rc, NULL);
    stop_relay = 1;
    double cr = 0, cs = send_cpu, cc = recv_cpu;
    for (int k = 0; k < relay_threads; k++) {
        pthread_join(rt[k], NULL);
        cr += relay_cpu[k];
    }

    qsort(lat, nlat, sizeof(double), cmp);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[nlat * 99 / 100] : 0;
    uint64_t s = sent;
    double loss = s ? 100.0 * (double)(s - received) / (double)s : 0;
    printf("relay-floor conns=%d relay_threads=%d offered=%.0f/s delivered=%.0f/s loss=%.3f%% "
           "p50=%.2fms p99=%.2fms relay_cpu=%.2fs (%.2f us/msg) load_cpu=%.2fs (%.2f us/msg)\n",
           conns, relay_threads, s / seconds, received / seconds, loss, p50 / 1e3, p99 / 1e3, cr,
           received ? cr * 1e6 / (double)received : 0, cs + cc,
           received ? (cs + cc) * 1e6 / (double)received : 0);
    return 0;
}
