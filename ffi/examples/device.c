/* A device in C on the tryst terminal (ffi/include/tryst.h): registers with
 * a tryst server, keeps its mapping alive, answers the trigger of a peer it
 * allows, receives one file into RECV_DIR (checked by SHA-256), exits.
 *
 *   gcc -std=c99 -Wall -Iffi/include ffi/examples/device.c \
 *       target/release/libtryst_ffi.a -lpthread -ldl -lm -o device
 *   ./device NAME SERVER_IP:PORT TRIGGER_IP:PORT SERVER_KEY_HEX ALLOW RECV_DIR
 *
 * Plain BSD sockets, one thread, IPv4; a new key on every start. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "tryst.h"

static int tcp = -1, udp = -1;
static struct sockaddr_in control;

/* The file being received: a hidden partial file, linked under its name once verified. */
static struct { const char *dir; char partial[512], name[256]; int fd; } rx = { 0, "", "", -1 };

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *what, int code) {
    fprintf(stderr, "%s: %s\n", what, code < 0 ? tryst_error_message(code) : strerror(errno));
    exit(1);
}

static int parse_addr(const char *text, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host) return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static TrystAddr to_tryst(const struct sockaddr_in *a) {
    TrystAddr t;
    memset(&t, 0, sizeof t);
    t.family = TRYST_AF_INET;
    memcpy(t.ip, &a->sin_addr, 4);
    t.port = ntohs(a->sin_port);
    return t;
}

static int hex_key(const char *hex, uint8_t out[32]) {
    if (strlen(hex) != 64) return -1;
    for (int i = 0; i < 32; i++)
        if (sscanf(hex + 2 * i, "%2hhx", &out[i]) != 1) return -1;
    return 0;
}

static void random_bytes(uint8_t *out, size_t len) {
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(out, 1, len, f) != len) die("/dev/urandom", 0);
    fclose(f);
}

/* ----- the file callbacks (TrystFileIo) ----- */
static size_t on_read(void *user, TrystSessionId s, uint8_t incoming, uint64_t off, uint8_t *buf, size_t len) {
    (void)user; (void)s;
    if (!incoming || rx.fd < 0) return 0; /* this device sends nothing */
    ssize_t n = pread(rx.fd, buf, len, (off_t)off);
    return n < 0 ? 0 : (size_t)n;
}

static int32_t on_begin(void *user, TrystSessionId s, const char *name, uint64_t size) {
    (void)user; (void)s;
    if (rx.fd >= 0) return -1; /* one file at a time */
    snprintf(rx.partial, sizeof rx.partial, "%s/.partial-%ld", rx.dir, (long)getpid());
    snprintf(rx.name, sizeof rx.name, "%s", name);
    rx.fd = open(rx.partial, O_RDWR | O_CREAT | O_EXCL, 0600);
    printf("receiving %s (%llu bytes)\n", name, (unsigned long long)size);
    return rx.fd < 0 ? -1 : 0;
}

static int32_t on_write(void *user, TrystSessionId s, uint64_t off, const uint8_t *data, size_t len) {
    (void)user; (void)s;
    while (len > 0) {
        ssize_t n = pwrite(rx.fd, data, len, (off_t)off);
        if (n <= 0) return -1;
        data += n; len -= (size_t)n; off += (uint64_t)n;
    }
    return 0;
}

static int32_t on_end(void *user, TrystSessionId s, uint8_t keep) {
    char final[800];
    int ok = 0;
    (void)user; (void)s;
    snprintf(final, sizeof final, "%s/%s", rx.dir, rx.name);
    if (keep) ok = fsync(rx.fd) == 0 && link(rx.partial, final) == 0; /* never replaces a file */
    close(rx.fd);
    rx.fd = -1;
    unlink(rx.partial);
    return keep && !ok ? -1 : 0;
}

/* ----- the loop ----- */
static void send_tcp(TrystTerminal *t, const uint8_t *buf, size_t len) {
    if (tcp < 0) {
        tcp = socket(AF_INET, SOCK_STREAM, 0);
        if (tcp < 0 || connect(tcp, (struct sockaddr *)&control, sizeof control) != 0) {
            if (tcp >= 0) close(tcp);
            tcp = -1;
            tryst_terminal_handle_tcp_closed(t, now_us());
            return;
        }
    }
    while (len > 0) {
        ssize_t n = send(tcp, buf, len, MSG_NOSIGNAL);
        if (n <= 0) { close(tcp); tcp = -1; tryst_terminal_handle_tcp_closed(t, now_us()); return; }
        buf += n; len -= (size_t)n;
    }
}

int main(int argc, char **argv) {
    static uint8_t buf[TRYST_MAX_TRANSMIT_LEN], rbuf[TRYST_MAX_TRANSMIT_LEN];
    struct sockaddr_in trigger, any;
    TrystConfig cfg;
    TrystFileIo io = { NULL, on_read, on_begin, on_write, on_end };
    TrystTerminal *t;
    TrystSessionId done_session;
    int online = 0, done = 0, code, has_deadline = 0;
    uint64_t deadline = 0;

    if (argc != 7) {
        fprintf(stderr, "usage: %s NAME SERVER TRIGGER SERVER_KEY ALLOW RECV_DIR\n", argv[0]);
        return 2;
    }
    memset(&cfg, 0, sizeof cfg);
    if (parse_addr(argv[2], &control) || parse_addr(argv[3], &trigger) || hex_key(argv[4], cfg.server_key)) {
        fprintf(stderr, "bad address or key\n");
        return 2;
    }
    rx.dir = argv[6];
    cfg.name = argv[1];
    cfg.name_len = strlen(argv[1]);
    cfg.trigger_server = to_tryst(&trigger);
    cfg.accept_files = 1;
    random_bytes(cfg.secret_key, 32);
    random_bytes(cfg.seed, 32);

    /* The handle lives in memory of ours: on firmware, a static array. */
    void *mem = NULL;
    size_t align = tryst_terminal_align() < sizeof(void *) ? sizeof(void *) : tryst_terminal_align();
    if (posix_memalign(&mem, align, tryst_terminal_size()) != 0) die("posix_memalign", 0);
    if ((code = tryst_terminal_init(mem, tryst_terminal_size(), &cfg, &io, now_us(), &t)) != TRYST_OK) die("init", code);
    if ((code = tryst_terminal_allow(t, argv[5], strlen(argv[5]))) != TRYST_OK) die("allow", code);

    udp = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&any, 0, sizeof any);
    any.sin_family = AF_INET;
    if (udp < 0 || bind(udp, (struct sockaddr *)&any, sizeof any) != 0) die("udp", 0);

    for (;;) {
        TrystOutput out;
        int timeout_ms = -1;
        /* Everything the last input caused, until the terminal says when to come back. */
        for (;;) {
            if ((code = tryst_terminal_poll(t, now_us(), buf, sizeof buf, &out)) != TRYST_OK) die("poll", code);
            if (out.kind == TRYST_OUTPUT_KIND_UDP) {
                struct sockaddr_in to;
                memset(&to, 0, sizeof to);
                to.sin_family = AF_INET;
                memcpy(&to.sin_addr, out.addr.ip, 4);
                to.sin_port = htons(out.addr.port);
                sendto(udp, buf, out.len, 0, (struct sockaddr *)&to, sizeof to);
            } else if (out.kind == TRYST_OUTPUT_KIND_TCP) {
                send_tcp(t, buf, out.len);
            } else if (out.kind == TRYST_OUTPUT_KIND_EVENT) {
                TrystEvent *e = &out.event;
                if (e->kind == TRYST_EVENT_KIND_ONLINE && !online) {
                    online = 1;
                    printf("online as %s; %s may send\n", argv[1], argv[5]);
                } else if (e->kind == TRYST_EVENT_KIND_SESSION_READY) {
                    printf("session with %s\n", e->name);
                } else if (e->kind == TRYST_EVENT_KIND_FILE_RECEIVED) {
                    printf("stored %s/%s (%llu bytes, SHA-256 ", rx.dir, e->name, (unsigned long long)e->value);
                    for (int i = 0; i < 32; i++) printf("%02x", e->key[i]);
                    printf(" verified)\n");
                    done = 1;
                    done_session = e->session;
                } else if (e->kind == TRYST_EVENT_KIND_FILE_FAILED) {
                    printf("not stored: %s (code %u)\n", e->name, e->code);
                } else if (e->kind == TRYST_EVENT_KIND_SESSION_ENDED && done &&
                           memcmp(e->session.bytes, done_session.bytes, 16) == 0) {
                    done = 2; /* the end notification is out: the sender knows */
                }
            } else {
                has_deadline = out.has_timeout;
                deadline = out.timeout_us;
                if (has_deadline) {
                    uint64_t now = now_us();
                    timeout_ms = deadline <= now ? 0 : (int)((deadline - now + 999) / 1000);
                }
                break;
            }
        }
        fflush(stdout);
        if (done == 2) break;

        struct pollfd fds[2] = { { udp, POLLIN, 0 }, { tcp, POLLIN, 0 } };
        int ready = poll(fds, tcp >= 0 ? 2 : 1, timeout_ms);
        if (ready < 0 && errno != EINTR) die("poll", 0);
        if (fds[0].revents & POLLIN) {
            struct sockaddr_in from;
            socklen_t from_len = sizeof from;
            ssize_t n;
            while ((n = recvfrom(udp, rbuf, sizeof rbuf, MSG_DONTWAIT, (struct sockaddr *)&from, &from_len)) >= 0) {
                TrystAddr a = to_tryst(&from);
                tryst_terminal_handle_udp(t, now_us(), &a, rbuf, (size_t)n);
                from_len = sizeof from;
            }
        }
        if (tcp >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = recv(tcp, rbuf, sizeof rbuf, 0);
            if (n <= 0 || tryst_terminal_handle_tcp(t, now_us(), rbuf, (size_t)n) == TRYST_ERR_NOT_TRYST) {
                close(tcp);
                tcp = -1;
                if (n <= 0) tryst_terminal_handle_tcp_closed(t, now_us());
            }
        }
        if (has_deadline && now_us() >= deadline) tryst_terminal_handle_timeout(t, now_us());
    }
    tryst_terminal_close(t);
    free(mem);
    return 0;
}
