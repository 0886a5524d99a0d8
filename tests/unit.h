/* Tiny assertion helpers for ubdkit's C unit tests: a failed CHECK prints
 * the expression and line, and the test exits 1 at the end. */
#ifndef UBDKIT_TESTS_UNIT_H
#define UBDKIT_TESTS_UNIT_H

#include <stdio.h>
#include <stdlib.h>

static int unit_failures;

#define CHECK(expr) \
  do { \
    if (!(expr)) { \
      fprintf (stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); \
      unit_failures++; \
    } \
  } while (0)

#define UNIT_EXIT() \
  do { \
    if (unit_failures) \
      fprintf (stderr, "%d check(s) failed\n", unit_failures); \
    return unit_failures ? EXIT_FAILURE : EXIT_SUCCESS; \
  } while (0)

#endif
