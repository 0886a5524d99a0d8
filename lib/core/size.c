#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "size.h"

static int
suffix_shift (char c, unsigned *shift)
{
  switch (tolower ((unsigned char) c)) {
  case 'b': *shift = 9; return 0;
  case 'k': *shift = 10; return 0;
  case 'm': *shift = 20; return 0;
  case 'g': *shift = 30; return 0;
  case 't': *shift = 40; return 0;
  case 'p': *shift = 50; return 0;
  case 'e': *shift = 60; return 0;
  default: return -1;
  }
}

/* One term: digits, an optional suffix, an optional "iB"/"B" after it. */
static const char *
parse_term (const char *p, uint64_t *out, const char **why)
{
  uint64_t v = 0;
  unsigned shift = 0;

  if (!isdigit ((unsigned char) *p)) {
    *why = "expected a number";
    return NULL;
  }
  for (; isdigit ((unsigned char) *p); p++) {
    unsigned d = *p - '0';
    if (v > (UINT64_MAX - d) / 10) {
      *why = "number too large";
      return NULL;
    }
    v = v * 10 + d;
  }
  if (*p && *p != '+') {
    if (suffix_shift (*p, &shift) == -1) {
      *why = "unknown suffix (use k, M, G, T, P, E or b)";
      return NULL;
    }
    p++;
    if (shift != 9 && (*p == 'i' || *p == 'I') && (p[1] == 'b' || p[1] == 'B'))
      p += 2;
    else if (shift != 9 && (*p == 'b' || *p == 'B'))
      p++;
  }
  if (shift && v > (UINT64_MAX >> shift)) {
    *why = "size too large";
    return NULL;
  }
  *out = v << shift;
  return p;
}

int
size_parse (const char *s, uint64_t *out, const char **why)
{
  uint64_t total = 0, term;
  const char *p = s;

  *why = NULL;
  if (!s || !*s) {
    *why = "empty size";
    return -1;
  }
  for (;;) {
    p = parse_term (p, &term, why);
    if (!p)
      return -1;
    if (term > UINT64_MAX - total) {
      *why = "size too large";
      return -1;
    }
    total += term;
    if (*p == '\0')
      break;
    if (*p != '+') {
      *why = "unexpected characters after size";
      return -1;
    }
    p++;
  }
  if (total > INT64_MAX) {
    *why = "size too large";
    return -1;
  }
  *out = total;
  return 0;
}

int
size_parse_uint (const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
  char *end;
  unsigned long long v;

  if (!s || !isdigit ((unsigned char) *s))
    return -1;
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno || *end || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}
