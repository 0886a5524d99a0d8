/* size_parse and size_parse_uint. */
#include <config.h>

#include <stdint.h>
#include <string.h>

#include "size.h"
#include "unit.h"

static void
ok (const char *s, uint64_t want)
{
  uint64_t v = 0;
  const char *why;

  CHECK (size_parse (s, &v, &why) == 0);
  if (v != want)
    fprintf (stderr, "size_parse(%s) = %llu, want %llu\n", s,
             (unsigned long long) v, (unsigned long long) want);
  CHECK (v == want);
}

static void
bad (const char *s)
{
  uint64_t v;
  const char *why = NULL;

  CHECK (size_parse (s, &v, &why) == -1);
  CHECK (why != NULL);
}

int
main (void)
{
  uint64_t v;

  ok ("0", 0);
  ok ("512", 512);
  ok ("1k", 1024);
  ok ("1K", 1024);
  ok ("64M", 64 << 20);
  ok ("1G", UINT64_C (1) << 30);
  ok ("1GiB", UINT64_C (1) << 30);
  ok ("2T", UINT64_C (2) << 40);
  ok ("8b", 4096);
  ok ("64M+1234", (64 << 20) + 1234);
  ok ("1G+1M+1", (UINT64_C (1) << 30) + (1 << 20) + 1);
  bad ("");
  bad ("abc");
  bad ("1.5M");
  bad ("-1");
  bad ("1X");
  bad ("1G+");
  bad ("+1G");
  bad ("16E");                  /* beyond INT64_MAX */
  bad ("99999999999999999999"); /* overflows */
  bad ("8E+8E");
  CHECK (size_parse_uint ("42", 1, 100, &v) == 0 && v == 42);
  CHECK (size_parse_uint ("0", 1, 100, &v) == -1);
  CHECK (size_parse_uint ("101", 1, 100, &v) == -1);
  CHECK (size_parse_uint ("4x", 1, 100, &v) == -1);
  CHECK (size_parse_uint ("", 1, 100, &v) == -1);
  UNIT_EXIT ();
}
