/* The messages of the status codes (status.h). */
#include <string.h>

#include "core/status.h"

const char *pl_status_text(int code) {
  switch (code) {
  case PL_OK: return "success";
#define PL_STATUS_CASE(name, value, text) \
  case name: return text;
  PL_STATUS_LIST(PL_STATUS_CASE)
#undef PL_STATUS_CASE
  default: return strerror(-code);
  }
}
