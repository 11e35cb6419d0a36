/* The kernel's floor for a TURN relay on this machine: what any TURN server, however cheap
 * its own code, must at least pay to relay turnutils_uclient's load over UDP.
 *
 * A relay with no authentication, no permissions, no lifetimes, no quotas and no metrics. It
 * answers every request with a success response (Allocate with XOR-RELAYED-ADDRESS), binds
 * channels, and moves ChannelData / Send indications from clients to their allocation's relay
 * socket and peer datagrams back as ChannelData (or Data indications). It has Switchboard's
 * I/O shape: one thread, one epoll set over the listener and every relay socket, recvmmsg on
 * each ready socket, one sendmmsg per relay socket for what a batch sends to peers, and one
 * sendmmsg on the listener for everything going back to clients. It exists to be measured by
 * bench/turn/compare.sh (FLOOR=1) beside coturn and Switchboard; it is not a TURN server.
 *
 *   cc -O2 -o /tmp/turn_floor bench/tools/turn_floor.c
 *   /tmp/turn_floor 127.0.0.1 PORT [YIELD]
 *
 * Loopback only: clients are told apart by source port. YIELD=1 calls sched_yield() after a
 * wakeup that moved datagrams, as Switchboard does by default (`udp_yield`). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32
#define MAX_ALLOCS 4096
#define MAX_CHANNELS 8
#define MAGIC 0x2112A442u
#define LISTENER UINT32_MAX

struct alloc {
    int fd;
    struct sockaddr_in client, relay;
    int nchan;
    uint16_t chan[MAX_CHANNELS];
    struct sockaddr_in chan_peer[MAX_CHANNELS];
};

static struct alloc allocs[MAX_ALLOCS];
static int nallocs;
static int32_t by_port[65536]; /* client source port -> allocation index + 1 */
static int listener, ep, yield_after_work;
static struct in_addr relay_ip;

/* Receive side: BATCH slots. */
static unsigned char rbuf[BATCH][2048];
static struct sockaddr_in rfrom[BATCH];
static struct iovec riov[BATCH];
static struct mmsghdr rmsg[BATCH];

/* Datagrams for clients, flushed once per wakeup on the listener. */
static unsigned char cbuf[4 * BATCH][2048];
static struct sockaddr_in cto[4 * BATCH];
static struct iovec ciov[4 * BATCH];
static struct mmsghdr cmsg[4 * BATCH];
static int nc;

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void wr16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }

static int recv_batch(int fd) {
    for (int i = 0; i < BATCH; i++) {
        riov[i] = (struct iovec){rbuf[i], sizeof rbuf[i]};
        rmsg[i].msg_hdr = (struct msghdr){.msg_name = &rfrom[i], .msg_namelen = sizeof rfrom[i],
                                          .msg_iov = &riov[i], .msg_iovlen = 1};
    }
    int n = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, NULL);
    return n < 0 ? 0 : n;
}

static void flush_clients(void) {
    int off = 0;
    while (off < nc) {
        int r = sendmmsg(listener, cmsg + off, nc - off, 0);
        if (r <= 0) break;
        off += r;
    }
    nc = 0;
}

static unsigned char *client_slot(const struct sockaddr_in *to, size_t len) {
    if (nc == 4 * BATCH) flush_clients();
    cto[nc] = *to;
    ciov[nc] = (struct iovec){cbuf[nc], len};
    cmsg[nc].msg_hdr = (struct msghdr){.msg_name = &cto[nc], .msg_namelen = sizeof cto[nc],
                                       .msg_iov = &ciov[nc], .msg_iovlen = 1};
    return cbuf[nc++];
}

/* Appends an XOR-address attribute (IPv4) at p; returns its size. */
static size_t xor_addr(unsigned char *p, uint16_t type, const struct sockaddr_in *a) {
    wr16(p, type);
    wr16(p + 2, 8);
    p[4] = 0;
    p[5] = 1;
    wr16(p + 6, ntohs(a->sin_port) ^ (MAGIC >> 16));
    uint32_t ip = ntohl(a->sin_addr.s_addr) ^ MAGIC;
    p[8] = ip >> 24; p[9] = ip >> 16; p[10] = ip >> 8; p[11] = ip;
    return 12;
}

/* Reads an XOR-PEER-ADDRESS (IPv4) value. */
static int read_xor_peer(const unsigned char *v, uint16_t len, struct sockaddr_in *out) {
    if (len < 8 || v[1] != 1) return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons(rd16(v + 2) ^ (MAGIC >> 16));
    uint32_t ip = ((uint32_t)v[4] << 24 | v[5] << 16 | v[6] << 8 | v[7]) ^ MAGIC;
    out->sin_addr.s_addr = htonl(ip);
    return 0;
}

static struct alloc *find_alloc(const struct sockaddr_in *from) {
    int32_t i = by_port[ntohs(from->sin_port)];
    return i ? &allocs[i - 1] : NULL;
}

static struct alloc *new_alloc(const struct sockaddr_in *from) {
    if (nallocs == MAX_ALLOCS) return NULL;
    struct alloc *a = &allocs[nallocs];
    memset(a, 0, sizeof *a);
    a->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    a->relay = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr = relay_ip};
    socklen_t l = sizeof a->relay;
    if (a->fd < 0 || bind(a->fd, (struct sockaddr *)&a->relay, l) < 0 ||
        getsockname(a->fd, (struct sockaddr *)&a->relay, &l) < 0)
        return NULL;
    a->client = *from;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)nallocs};
    epoll_ctl(ep, EPOLL_CTL_ADD, a->fd, &ev);
    by_port[ntohs(from->sin_port)] = ++nallocs;
    return a;
}

/* Answers a STUN request with a success response; keeps what Allocate, ChannelBind and Send
 * need. Everything else about the request is ignored. */
static void stun(const unsigned char *m, size_t n, const struct sockaddr_in *from) {
    if (n < 20 || rd16(m + 2) + 20u > n) return;
    uint16_t type = rd16(m), method = type & 0x3eef;
    struct sockaddr_in peer;
    int have_peer = 0;
    uint16_t chan = 0;
    const unsigned char *data = NULL;
    uint16_t data_len = 0;
    for (size_t off = 20; off + 4 <= n;) {
        uint16_t at = rd16(m + off), al = rd16(m + off + 2);
        if (off + 4 + al > n) break;
        const unsigned char *v = m + off + 4;
        if (at == 0x0012 && read_xor_peer(v, al, &peer) == 0) have_peer = 1;
        if (at == 0x000c && al >= 2) chan = rd16(v);
        if (at == 0x0013) { data = v; data_len = al; }
        off += 4 + ((al + 3u) & ~3u);
    }
    struct alloc *a = find_alloc(from);
    if (type == 0x0016) { /* Send indication */
        if (a && have_peer && data)
            sendto(a->fd, data, data_len, 0, (struct sockaddr *)&peer, sizeof peer);
        return;
    }
    if ((type & 0x0110) != 0) return; /* not a request */
    if (method == 0x0003 && !a) a = new_alloc(from);
    if (method == 0x0009 && a && have_peer) {
        int i = 0;
        while (i < a->nchan && a->chan[i] != chan) i++;
        if (i == a->nchan && a->nchan < MAX_CHANNELS) a->nchan++;
        if (i < a->nchan) { a->chan[i] = chan; a->chan_peer[i] = peer; }
    }
    unsigned char *r = client_slot(from, 0);
    memcpy(r, m, 20);
    wr16(r, type | 0x0100);
    size_t len = 0;
    if (method == 0x0001 || method == 0x0003) len += xor_addr(r + 20 + len, 0x0020, from);
    if (method == 0x0003 && a) len += xor_addr(r + 20 + len, 0x0016, &a->relay);
    if (method == 0x0003 || method == 0x0004) {
        wr16(r + 20 + len, 0x000d); wr16(r + 22 + len, 4);
        r[24 + len] = 0; r[25 + len] = 0; wr16(r + 26 + len, 600);
        len += 8;
    }
    wr16(r + 2, (uint16_t)len);
    ciov[nc - 1].iov_len = 20 + len;
}

/* Datagrams to peers from one listener batch, sent with one sendmmsg per relay socket. */
static struct mmsghdr pmsg[BATCH];
static struct iovec piov[BATCH];
static struct sockaddr_in pto[BATCH];
static int pfd[BATCH], np;

static void flush_peers(void) {
    int done[BATCH] = {0};
    struct mmsghdr group[BATCH];
    for (int i = 0; i < np; i++) {
        if (done[i]) continue;
        int g = 0;
        for (int j = i; j < np; j++)
            if (!done[j] && pfd[j] == pfd[i]) { group[g++] = pmsg[j]; done[j] = 1; }
        for (int off = 0; off < g;) {
            int r = sendmmsg(pfd[i], group + off, g - off, 0);
            if (r <= 0) break;
            off += r;
        }
    }
    np = 0;
}

static void from_clients(void) {
    for (;;) {
        int n = recv_batch(listener);
        for (int i = 0; i < n; i++) {
            unsigned char *m = rbuf[i];
            size_t len = rmsg[i].msg_len;
            if (len >= 4 && (m[0] & 0xc0) == 0x40) { /* ChannelData */
                struct alloc *a = find_alloc(&rfrom[i]);
                uint16_t chan = rd16(m), dl = rd16(m + 2);
                if (!a || dl + 4u > len) continue;
                for (int c = 0; c < a->nchan; c++) {
                    if (a->chan[c] != chan) continue;
                    pfd[np] = a->fd;
                    pto[np] = a->chan_peer[c];
                    piov[np] = (struct iovec){m + 4, dl};
                    pmsg[np].msg_hdr = (struct msghdr){.msg_name = &pto[np],
                                                       .msg_namelen = sizeof pto[np],
                                                       .msg_iov = &piov[np], .msg_iovlen = 1};
                    np++;
                    break;
                }
            } else {
                stun(m, len, &rfrom[i]);
            }
        }
        flush_peers(); /* before the next recv_batch reuses rbuf */
        if (n < BATCH) return;
    }
}

static void from_peers(struct alloc *a) {
    for (;;) {
        int n = recv_batch(a->fd);
        for (int i = 0; i < n; i++) {
            size_t len = rmsg[i].msg_len;
            int c = 0;
            while (c < a->nchan && (a->chan_peer[c].sin_port != rfrom[i].sin_port ||
                                    a->chan_peer[c].sin_addr.s_addr != rfrom[i].sin_addr.s_addr))
                c++;
            if (c < a->nchan) {
                unsigned char *o = client_slot(&a->client, 4 + len);
                wr16(o, a->chan[c]);
                wr16(o + 2, (uint16_t)len);
                memcpy(o + 4, rbuf[i], len);
            } else { /* Data indication */
                size_t pad = (len + 3) & ~(size_t)3;
                unsigned char *o = client_slot(&a->client, 20 + 12 + 4 + pad);
                wr16(o, 0x0017);
                wr16(o + 2, (uint16_t)(12 + 4 + pad));
                o[4] = 0x21; o[5] = 0x12; o[6] = 0xa4; o[7] = 0x42;
                memset(o + 8, 7, 12);
                xor_addr(o + 20, 0x0012, &rfrom[i]);
                wr16(o + 32, 0x0013);
                wr16(o + 34, (uint16_t)len);
                memcpy(o + 36, rbuf[i], len);
                memset(o + 36 + len, 0, pad - len);
            }
        }
        if (n < BATCH) return;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s IP PORT [YIELD]\n", argv[0]);
        return 2;
    }
    yield_after_work = argc > 3 && atoi(argv[3]);
    inet_pton(AF_INET, argv[1], &relay_ip);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2])), .sin_addr = relay_ip};
    listener = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int buf = 4 << 20;
    setsockopt(listener, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    setsockopt(listener, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    if (bind(listener, (struct sockaddr *)&la, sizeof la) < 0) {
        perror("bind");
        return 1;
    }
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = LISTENER}, evs[64];
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == LISTENER) from_clients();
            else from_peers(&allocs[evs[i].data.u32]);
        }
        flush_clients();
        if (yield_after_work && n > 0) sched_yield();
    }
}
