/* The C boundary of tryst-ffi under AddressSanitizer and
 * UndefinedBehaviorSanitizer (ffi/tests/boundary.rs builds and runs it):
 * null pointers, short buffers, wrong lengths, misaligned and zeroed
 * memory, use after close, garbage datagrams and streams. Every call must
 * answer its error code, never crash or touch memory it was not given. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tryst.h"

static int failures = 0;

#define EXPECT(call, want)                                                          \
    do {                                                                            \
        int32_t got_ = (call);                                                      \
        if (got_ != (want)) {                                                       \
            fprintf(stderr, "%s:%d: %s = %d (%s), want %d\n", __FILE__, __LINE__,   \
                    #call, got_, tryst_error_message(got_), (want));                \
            failures++;                                                             \
        }                                                                           \
    } while (0)

static uint32_t rng_state = 12345;
static uint32_t next_rand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static size_t read_nothing(void *u, TrystSessionId s, uint8_t in, uint64_t off, uint8_t *buf, size_t len) {
    (void)u; (void)s; (void)in; (void)off; (void)buf; (void)len;
    return 0;
}

static TrystConfig config(void) {
    static const char name[] = "device1";
    TrystConfig c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.name_len = strlen(name);
    memset(c.secret_key, 7, 32);
    memset(c.server_key, 9, 32);
    memset(c.seed, 1, 32);
    c.trigger_server.family = TRYST_AF_INET;
    c.trigger_server.ip[0] = 127;
    c.trigger_server.ip[3] = 1;
    c.trigger_server.port = 9;
    return c;
}

/* Drains the outputs; checks they are well formed. */
static void drain(TrystTerminal *t, uint64_t now) {
    static uint8_t buf[TRYST_MAX_TRANSMIT_LEN];
    TrystOutput out;
    for (int i = 0; i < 1000; i++) {
        EXPECT(tryst_terminal_poll(t, now, buf, sizeof buf, &out), TRYST_OK);
        if (out.kind == TRYST_OUTPUT_KIND_TIMEOUT) return;
        if ((out.kind == TRYST_OUTPUT_KIND_UDP || out.kind == TRYST_OUTPUT_KIND_TCP) &&
            (out.len == 0 || out.len > sizeof buf)) {
            fprintf(stderr, "transmit of %zu bytes\n", out.len);
            failures++;
        }
    }
    fprintf(stderr, "poll never settled\n");
    failures++;
}

int main(void) {
    size_t size = tryst_terminal_size(), align = tryst_terminal_align();
    uint8_t *mem = NULL, *zeroed = NULL;
    if (align < sizeof(void *)) align = sizeof(void *); /* posix_memalign's minimum */
    size_t rounded = (size + align - 1) / align * align;
    if (posix_memalign((void **)&mem, align, rounded + align) || posix_memalign((void **)&zeroed, align, rounded))
        return 1;
    TrystConfig cfg = config();
    TrystFileIo io = { NULL, read_nothing, NULL, NULL, NULL };
    TrystTerminal *t = NULL;
    TrystOutput out;
    uint8_t buf[TRYST_MAX_TRANSMIT_LEN], key[32];
    uint32_t request;
    TrystSessionId sid;
    TrystAddr from = cfg.trigger_server, other = cfg.trigger_server;
    other.port = 4000;
    memset(&sid, 3, sizeof sid);

    /* Every code has a message; unknown ones too. */
    for (int32_t code = -20; code <= 1; code++)
        if (tryst_error_message(code) == NULL || tryst_error_message(code)[0] == 0) failures++;

    /* init: nulls, short memory, misaligned memory, bad arguments. */
    EXPECT(tryst_terminal_init(NULL, size, &cfg, NULL, 1, &t), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_init(mem, size, NULL, NULL, 1, &t), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_init(mem, size, &cfg, NULL, 1, NULL), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_init(mem, size - 1, &cfg, NULL, 1, &t), TRYST_ERR_LENGTH);
    EXPECT(tryst_terminal_init(mem, 0, &cfg, NULL, 1, &t), TRYST_ERR_LENGTH);
    if (align > 1) EXPECT(tryst_terminal_init(mem + 1, size, &cfg, NULL, 1, &t), TRYST_ERR_ALIGN);
    TrystConfig bad = cfg;
    bad.name = NULL;
    EXPECT(tryst_terminal_init(mem, size, &bad, NULL, 1, &t), TRYST_ERR_NULL);
    bad = cfg;
    bad.name = "a name far too long for a tryst name, longer than sixty-four bytes in all";
    bad.name_len = strlen(bad.name);
    EXPECT(tryst_terminal_init(mem, size, &bad, NULL, 1, &t), TRYST_ERR_LENGTH);
    bad.name = "bad\nname";
    bad.name_len = 8;
    EXPECT(tryst_terminal_init(mem, size, &bad, NULL, 1, &t), TRYST_ERR_NAME);
    bad.name = "\xff\xfe";
    bad.name_len = 2;
    EXPECT(tryst_terminal_init(mem, size, &bad, NULL, 1, &t), TRYST_ERR_NAME);
    bad = cfg;
    bad.name_len = 0;
    EXPECT(tryst_terminal_init(mem, size, &bad, NULL, 1, &t), TRYST_ERR_NAME);
    bad = cfg;
    bad.trigger_server.family = 5;
    EXPECT(tryst_terminal_init(mem, size, &bad, NULL, 1, &t), TRYST_ERR_ARGUMENT);

    /* Memory never initialised (zeroed) and null handles are refused. */
    memset(zeroed, 0, rounded);
    EXPECT(tryst_terminal_handle_timeout((TrystTerminal *)zeroed, 1), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_close((TrystTerminal *)zeroed), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_handle_timeout(NULL, 1), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_poll(NULL, 1, buf, sizeof buf, &out), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_close(NULL), TRYST_ERR_NULL);

    /* A live terminal. */
    EXPECT(tryst_terminal_init(mem, size, &cfg, &io, 1, &t), TRYST_OK);
    if (t == NULL) return 1;
    EXPECT(tryst_terminal_poll(t, 1, NULL, sizeof buf, &out), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_poll(t, 1, buf, sizeof buf, NULL), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_poll(t, 1, buf, TRYST_MAX_TRANSMIT_LEN - 1, &out), TRYST_ERR_LENGTH);
    /* The first output is the registration, on the TCP stream. */
    EXPECT(tryst_terminal_poll(t, 1, buf, sizeof buf, &out), TRYST_OK);
    if (out.kind != TRYST_OUTPUT_KIND_TCP) { fprintf(stderr, "first output %u\n", out.kind); failures++; }
    drain(t, 2);
    EXPECT(tryst_terminal_public_key(t, NULL), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_public_key(t, key), TRYST_OK);

    /* App calls with bad arguments. */
    EXPECT(tryst_terminal_allow(t, NULL, 3), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_allow(t, "phone", 500), TRYST_ERR_LENGTH);
    EXPECT(tryst_terminal_allow(t, "ph\tone", 6), TRYST_ERR_NAME);
    EXPECT(tryst_terminal_allow(t, "", 0), TRYST_ERR_NAME);
    EXPECT(tryst_terminal_allow(t, "phone", 5), TRYST_OK);
    EXPECT(tryst_terminal_disallow(t, "other", 5), TRYST_ERR_NAME);
    EXPECT(tryst_terminal_connect(t, 3, "phone", 5, 60, NULL), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_connect(t, 3, NULL, 5, 60, &request), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_connect(t, 3, "phone", 5, 60, &request), TRYST_ERR_NOT_REGISTERED);
    EXPECT(tryst_terminal_answer(t, 3, 1, 7), TRYST_ERR_ARGUMENT);
    EXPECT(tryst_terminal_answer(t, 3, 1, 1), TRYST_ERR_NO_QUERY);
    EXPECT(tryst_terminal_end_session(t, 3, sid, 0), TRYST_ERR_ARGUMENT);
    EXPECT(tryst_terminal_end_session(t, 3, sid, 99), TRYST_ERR_ARGUMENT);
    EXPECT(tryst_terminal_end_session(t, 3, sid, TRYST_REASON_CANCELLED), TRYST_ERR_NO_SESSION);
    EXPECT(tryst_terminal_send_file(t, 3, sid, NULL, 4, 10, 0), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_send_file(t, 3, sid, "a.bin", 300, 10, 0), TRYST_ERR_LENGTH);
    EXPECT(tryst_terminal_send_file(t, 3, sid, "a.bin", 5, 10, 0), TRYST_ERR_NO_SESSION);
    drain(t, 3);

    /* Inputs with bad pointers and lengths. */
    EXPECT(tryst_terminal_handle_udp(t, 4, NULL, buf, 10), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_handle_udp(t, 4, &from, NULL, 10), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_handle_udp(t, 4, &from, buf, (size_t)1 << 20), TRYST_ERR_LENGTH);
    TrystAddr weird = from;
    weird.family = 0;
    EXPECT(tryst_terminal_handle_udp(t, 4, &weird, buf, 10), TRYST_ERR_ARGUMENT);
    EXPECT(tryst_terminal_handle_tcp(t, 4, NULL, 10), TRYST_ERR_NULL);
    EXPECT(tryst_terminal_handle_tcp(t, 4, buf, 0), TRYST_OK);

    /* Garbage datagrams (exactly as long as given: ASan sees any overread)
     * from the trigger server and from anyone, some shaped as peer packets;
     * time going back and forth. */
    for (int i = 0; i < 3000; i++) {
        size_t len = next_rand() % 1600;
        uint8_t *d = malloc(len ? len : 1);
        for (size_t k = 0; k < len; k++) d[k] = (uint8_t)next_rand();
        if (len > 0 && i % 3 == 0) d[0] = (uint8_t)(0x80 | (next_rand() & 0x0f));
        uint64_t now = 10 + (uint64_t)(next_rand() % 100000000u);
        EXPECT(tryst_terminal_handle_udp(t, now, i % 2 ? &from : &other, d, len), TRYST_OK);
        free(d);
        if (i % 50 == 0) EXPECT(tryst_terminal_handle_timeout(t, now), TRYST_OK);
        drain(t, now);
    }
    /* A stream that is not tryst traffic is refused; the terminal goes on. */
    memcpy(buf, "GET / HTTP/1.1\r\n\r\n", 18);
    EXPECT(tryst_terminal_handle_tcp(t, 200000000, buf, 18), TRYST_ERR_NOT_TRYST);
    EXPECT(tryst_terminal_handle_tcp_closed(t, 200000001), TRYST_OK);
    drain(t, 200000002);

    /* Use after close is refused, for every call. */
    EXPECT(tryst_terminal_close(t), TRYST_OK);
    EXPECT(tryst_terminal_close(t), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_poll(t, 5, buf, sizeof buf, &out), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_handle_udp(t, 5, &from, buf, 10), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_handle_tcp(t, 5, buf, 10), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_handle_tcp_closed(t, 5), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_handle_timeout(t, 5), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_allow(t, "phone", 5), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_connect(t, 5, "phone", 5, 60, &request), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_answer(t, 5, 1, 1), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_end_session(t, 5, sid, 1), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_send_file(t, 5, sid, "a.bin", 5, 1, 0), TRYST_ERR_CLOSED);
    EXPECT(tryst_terminal_public_key(t, key), TRYST_ERR_CLOSED);

    /* The same memory can hold a new terminal. */
    EXPECT(tryst_terminal_init(mem, size, &cfg, NULL, 1, &t), TRYST_OK);
    drain(t, 1);
    EXPECT(tryst_terminal_close(t), TRYST_OK);

    free(mem);
    free(zeroed);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("boundary: all checks passed\n");
    return 0;
}
