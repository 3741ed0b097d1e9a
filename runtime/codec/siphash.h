/* Private to the parlua runtime: SipHash-2-4, a keyed hash short enough
 * to sign every function's bytecode (codec.c) and strong enough that
 * nobody without the key forges a signature.
 */
#ifndef PL_SIPHASH_H
#define PL_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* The 64-bit SipHash-2-4 of p[0..n) under the 128-bit key. */
uint64_t pl_siphash24(const uint64_t key[2], const unsigned char *p, size_t n);

#endif
