/* secmem.c: a free list of equal slots inside one sodium_malloc region. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "secmem.h"

struct secmem {
    unsigned char *region;
    size_t slot, n, used;
    void **free; /* stack of free slots; kept outside the region */
    size_t nfree;
};

struct secmem *
secmem_new(size_t slot_size, size_t nslots)
{
    struct secmem *sm = calloc(1, sizeof(*sm));

    if (sm == NULL)
        return NULL;
    sm->slot = (slot_size + 15) & ~(size_t)15;
    sm->n = nslots;
    sm->region = sodium_malloc(sm->slot * nslots);
    sm->free = calloc(nslots, sizeof(void *));
    if (sm->region == NULL || sm->free == NULL) {
        secmem_free(sm);
        return NULL;
    }
    sodium_memzero(sm->region, sm->slot * nslots);
    for (size_t i = nslots; i > 0; i--)
        sm->free[sm->nfree++] = sm->region + (i - 1) * sm->slot;
    return sm;
}

void
secmem_free(struct secmem *sm)
{
    if (sm == NULL)
        return;
    if (sm->region)
        sodium_free(sm->region); /* wipes it */
    free(sm->free);
    free(sm);
}

void *
secmem_get(struct secmem *sm)
{
    if (sm->nfree == 0)
        return NULL;
    sm->used++;
    return sm->free[--sm->nfree];
}

void
secmem_put(struct secmem *sm, void *slot)
{
    if (slot == NULL)
        return;
    sodium_memzero(slot, sm->slot);
    sm->free[sm->nfree++] = slot;
    sm->used--;
}

size_t
secmem_in_use(const struct secmem *sm)
{
    return sm->used;
}
