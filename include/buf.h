/*
 * buf.h: a byte buffer that grows by doubling from a first size up to an
 * optional limit, always NUL-terminated after its bytes (the terminator is
 * not counted in len, so the next append continues the same string).  For
 * what arrives in pieces: HTTP requests (httpd.c), provider answers
 * (http.c), the ledger's batched arguments.
 */
#ifndef OTPD_BUF_H
#define OTPD_BUF_H

#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append */
    size_t len, cap;
};

enum buf_error {
    BUF_TOO_BIG = -1,   /* len + n + 1 would pass max */
    BUF_NO_MEMORY = -2, /* realloc failed; the buffer is as it was */
};

/* n bytes of p and a NUL; 0, or a buf_error.  first: the first size; max: 0 for none. */
int buf_append(struct buf *b, const void *p, size_t n, size_t first, size_t max);
void buf_free(struct buf *b);

#endif
