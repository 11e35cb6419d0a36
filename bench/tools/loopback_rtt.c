/* One-byte TCP ping-pong over loopback between two processes pinned to given CPUs:
 * what one hop (a write that wakes a blocked reader, and back) costs on this machine.
 *
 *   cc -O2 -o /tmp/loopback_rtt bench/tools/loopback_rtt.c
 *   /tmp/loopback_rtt 0 0     # both on CPU 0
 *   /tmp/loopback_rtt 0 1     # one process per CPU: every wake crosses CPUs
 *
 * Prints the p50 and p99 round trip over 2,000 pings, 200 µs apart (so the reader sleeps). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 2000

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CPU_A CPU_B\n", argv[0]);
        return 2;
    }
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &n)) {
        perror("listen");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        pin(atoi(argv[2]));
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, sizeof a)) return 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char b;
        while (recv(c, &b, 1, 0) == 1) send(c, &b, 1, 0);
        return 0;
    }
    pin(atoi(argv[1]));
    int s = accept(l, 0, 0);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static double rtt[N];
    char b = 'x';
    for (int i = 0; i < N; i++) {
        double t = now_us();
        send(s, &b, 1, 0);
        recv(s, &b, 1, 0);
        rtt[i] = now_us() - t;
        usleep(200);
    }
    close(s);
    waitpid(child, NULL, 0);
    qsort(rtt, N, sizeof(double), cmp);
    printf("cpu %s <-> %s: rtt p50 %.1f us, p99 %.1f us\n", argv[1], argv[2], rtt[N / 2],
           rtt[N * 99 / 100]);
    return 0;
}
