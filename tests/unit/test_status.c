/* The one list of status codes (core/status.h): every code has its own
 * value and its own message, and none can be mistaken for a -errno, so a
 * real EIO is never read as "the queue is closed". */
#include <errno.h>

#include "core/status.h"
#include "runner.h"

#define AS_VALUE(name, value, text) name,
#define AS_NAME(name, value, text) #name,
#define AS_TEXT(name, value, text) text,
static const int values[] = {PL_STATUS_LIST(AS_VALUE)};
static const char *const names[] = {PL_STATUS_LIST(AS_NAME)};
static const char *const texts[] = {PL_STATUS_LIST(AS_TEXT)};
#define NCODES ((int)(sizeof values / sizeof values[0]))

/* The largest errno Linux defines (EHWPOISON); checked against errno.h. */
#define LAST_ERRNO 133

static void test_values_distinct(void) {
  CHECK(NCODES > 10);
  for (int i = 0; i < NCODES; i++) {
    CHECK(values[i] != PL_OK);
    for (int j = i + 1; j < NCODES; j++) {
      if (values[i] == values[j]) fprintf(stderr, "%s == %s\n", names[i], names[j]);
      CHECK(values[i] != values[j]);
    }
  }
}

static void test_texts_distinct(void) {
  for (int i = 0; i < NCODES; i++) {
    CHECK(texts[i][0] != '\0');
    CHECK(strcmp(pl_status_text(values[i]), texts[i]) == 0);
    for (int j = i + 1; j < NCODES; j++) {
      if (strcmp(texts[i], texts[j]) == 0) fprintf(stderr, "%s and %s: same text\n", names[i], names[j]);
      CHECK(strcmp(texts[i], texts[j]) != 0);
    }
  }
}

static void test_no_overlap_with_errno(void) {
  CHECK_EQ_INT(EHWPOISON, LAST_ERRNO);
  for (int i = 0; i < NCODES; i++) {
    if (values[i] >= -LAST_ERRNO && values[i] <= LAST_ERRNO) fprintf(stderr, "%s overlaps errno\n", names[i]);
    CHECK(values[i] < -LAST_ERRNO);
  }
}

static void test_errno_text(void) {
  /* -EIO is an OS error with its strerror text, not one of ours. */
  CHECK(strcmp(pl_status_text(-EIO), strerror(EIO)) == 0);
  CHECK(strcmp(pl_status_text(PL_ECLOSED), strerror(EIO)) != 0);
  CHECK(strcmp(pl_status_text(PL_OK), "success") == 0);
}

int main(void) {
  static const test_case tests[] = {
      {"every status code has its own value", test_values_distinct},
      {"every status code has its own message", test_texts_distinct},
      {"no status code equals a -errno", test_no_overlap_with_errno},
      {"-errno is reported with its OS text", test_errno_text},
      {NULL, NULL}};
  return run_tests(tests, 30);
}
