/*
 * buf.c: the growing byte buffer of buf.h, one for every module that
 * gathers bytes in pieces.
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"

int
buf_append(struct buf *b, const void *p, size_t n, size_t first, size_t max)
{
    size_t need = b->len + n + 1, cap = b->cap ? b->cap : first;

    if (max && need > max)
        return BUF_TOO_BIG;
    while (cap < need)
        cap *= 2;
    if (max && cap > max)
        cap = max;
    if (cap != b->cap) {
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return BUF_NO_MEMORY;
        b->data = data;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

void
buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
