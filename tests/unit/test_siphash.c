/* SipHash-2-4 against the reference vectors of its paper (key 00..0f,
 * messages 00, 00 01, ...): the MAC of signed bytecode is the real one. */
#include "codec/siphash.h"
#include "runner.h"

static const uint64_t key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};

static uint64_t hash_of_first(size_t n) {
  unsigned char m[64] = {0};
  for (size_t i = 0; i < n; i++) m[i] = (unsigned char)i;
  return pl_siphash24(key, m, n);
}

static void test_empty(void) { CHECK(hash_of_first(0) == 0x726fdb47dd0e0e31ull); }

static void test_fifteen_bytes(void) { CHECK(hash_of_first(15) == 0xa129ca6149be45e5ull); }

static void test_whole_words(void) { CHECK(hash_of_first(8) == 0x93f5f5799a932462ull); }

int main(void) {
  static const test_case tests[] = {
      {"the empty message", test_empty},
      {"the paper's 15-byte message", test_fifteen_bytes},
      {"a message of whole 8-byte words", test_whole_words},
      {NULL, NULL}};
  return run_tests(tests, 30);
}
