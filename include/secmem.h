/*
 * secmem.h: fixed-size slots for secrets (a code and the SMS that carries
 * it) in one sodium_malloc region: locked against swap where the limit
 * allows, guard pages around it, and every slot wiped when returned.
 * One region instead of a sodium_malloc per job, which would cost a mmap
 * and three pages each.
 */
#ifndef OTPD_SECMEM_H
#define OTPD_SECMEM_H

#include <stddef.h>

struct secmem;
struct secmem *secmem_new(size_t slot_size, size_t nslots);
void secmem_free(struct secmem *sm);
/* NULL when every slot is taken. */
void *secmem_get(struct secmem *sm);
void secmem_put(struct secmem *sm, void *slot);
size_t secmem_in_use(const struct secmem *sm);

#endif
