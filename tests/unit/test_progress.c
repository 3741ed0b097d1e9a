/* The progress bar's frame: it fits the terminal's width, whatever the
 * width, and says what tqdm says (percentage, count, elapsed<remaining,
 * rate). */
#include "runner.h"
#include "core/progress.h"

static void test_fits_every_width(void) {
  char buf[512];
  for (int width = 0; width <= 300; width++) {
    size_t n = pl_progress_format(buf, sizeof buf, width, 123456, 1000000, 3725.0);
    CHECK_EQ_INT(n, strlen(buf));
    CHECK(width == 0 ? n == 0 : (int)n <= width - 1);
  }
}

static void test_wide_frame(void) {
  char buf[512];
  size_t n = pl_progress_format(buf, sizeof buf, 80, 45, 100, 2.0);
  CHECK_EQ_INT(n, 79);
  CHECK(strncmp(buf, " 45%|", 5) == 0);
  CHECK_STR_CONTAINS(buf, "| 45/100 [00:02<00:02, 22.50it/s]");
  /* 45% of the bar's columns are filled. */
  size_t bar = 79 - 5 - strlen("| 45/100 [00:02<00:02, 22.50it/s]"), filled = 0;
  for (size_t i = 5; i < 5 + bar; i++) filled += buf[i] == '#';
  CHECK_EQ_INT(filled, bar * 45 / 100);
}

static void test_narrow_frames_drop_the_bar_then_the_times(void) {
  char buf[512];
  pl_progress_format(buf, sizeof buf, 40, 20, 20, 1.0);
  CHECK(strcmp(buf, "100% 20/20 [00:01<00:00, 20.00it/s]") == 0);
  pl_progress_format(buf, sizeof buf, 20, 20, 20, 1.0);
  CHECK(strcmp(buf, "100% 20/20") == 0);
  pl_progress_format(buf, sizeof buf, 6, 20, 20, 1.0);
  CHECK(strcmp(buf, "20/20") == 0);
}

static void test_rates_and_times_as_tqdm(void) {
  char buf[512];
  pl_progress_format(buf, sizeof buf, 200, 0, 10, 0.0);
  CHECK_STR_CONTAINS(buf, "| 0/10 [00:00<?, ?it/s]");
  pl_progress_format(buf, sizeof buf, 200, 1, 10, 4.0);
  CHECK_STR_CONTAINS(buf, "[00:04<00:36, 4.00s/it]");  /* slower than one a second */
  pl_progress_format(buf, sizeof buf, 200, 1, 2, 3725.0);
  CHECK_STR_CONTAINS(buf, "[1:02:05<1:02:05, 3725.00s/it]");
}

int main(void) {
  static const test_case tests[] = {
      {"fits_every_width", test_fits_every_width},
      {"wide_frame", test_wide_frame},
      {"narrow_frames_drop_the_bar_then_the_times", test_narrow_frames_drop_the_bar_then_the_times},
      {"rates_and_times_as_tqdm", test_rates_and_times_as_tqdm},
      {NULL, NULL}};
  return run_tests(tests, 10);
}
