/* Parsing human sizes: "512", "64k", "1G", "1.5M" is refused, and sums like
 * "64M+1234".  Suffixes are powers of 1024 (b=512-byte sectors, as nbdkit). */
#ifndef UBDKIT_SIZE_H
#define UBDKIT_SIZE_H

#include <stdint.h>

/* Returns 0 and sets *out, or -1 with a reason in *why (static string). */
int size_parse (const char *s, uint64_t *out, const char **why);

/* Parse an unsigned decimal integer in [min,max]; -1 on error. */
int size_parse_uint (const char *s, uint64_t min, uint64_t max, uint64_t *out);

#endif
