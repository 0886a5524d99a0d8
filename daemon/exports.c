/* See exports.h. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exports.h"
#include "log.h"

/* Split SPEC into words at blanks, honouring "double quotes".  The words
 * are stored in one allocation returned in *store.  Returns the count, or
 * -1 for an unterminated quote. */
static int
split_words (const char *spec, char **store, char **words, int max)
{
  char *buf = malloc (strlen (spec) + 1), *o = buf;
  const char *p = spec;
  int n = 0;

  if (!buf)
    fatal ("malloc: %m");
  *store = buf;
  while (*p) {
    bool quoted = false;
    while (*p == ' ' || *p == '\t')
      p++;
    if (!*p)
      break;
    if (n == max)
      return -1;
    words[n++] = o;
    for (; *p && (quoted || (*p != ' ' && *p != '\t')); p++) {
      if (*p == '"')
        quoted = !quoted;
      else
        *o++ = *p;
    }
    *o++ = '\0';
    if (quoted)
      return -1;
  }
  return n;
}

/* Take the export's own keys (description=, readonly=) out of the
 * backend's parameters.  Returns the remaining count, or -1. */
static int
take_export_keys (char **params, int n, const char **desc, bool *ro)
{
  int kept = 0;

  for (int i = 0; i < n; i++) {
    if (strncmp (params[i], "description=", 12) == 0)
      *desc = params[i] + 12;
    else if (strncmp (params[i], "readonly=", 9) == 0) {
      int b = backend_parse_bool (params[i] + 9);
      if (b == -1)
        return -1;
      *ro = b;
    }
    else
      params[kept++] = params[i];
  }
  return kept;
}

static int
config_spec (struct export_set *s, const char *spec, bool readonly_all)
{
  char *words[BACKEND_MAX_PARAMS + 2];
  struct export *e = &s->list[s->n];
  const char *desc = NULL;
  bool ro = readonly_all;
  int n = split_words (spec, &s->words[s->n], words, BACKEND_MAX_PARAMS + 2);
  int r;

  if (n < 2) {
    fprintf (stderr, "ubdkit serve: -E '%s': expected 'NAME BACKEND "
             "[KEY=VALUE ...]'\n", spec);
    return -1;
  }
  n = take_export_keys (words + 2, n - 2, &desc, &ro);
  if (n == -1) {
    fprintf (stderr, "ubdkit serve: -E '%s': bad readonly=\n", spec);
    return -1;
  }
  r = backend_config (&s->backends[s->n], words[1], words + 2, n, ro);
  if (r < 0)
    return r;
  *e = (struct export) { words[0], desc, &s->backends[s->n] };
  return 0;
}

static bool
names_unique (const struct export_set *s)
{
  for (size_t i = 0; i < s->n; i++)
    for (size_t k = i + 1; k < s->n; k++)
      if (strcmp (s->list[i].name, s->list[k].name) == 0) {
        fprintf (stderr, "ubdkit serve: export '%s' given twice\n",
                 s->list[i].name);
        return false;
      }
  return true;
}

int
exports_config (struct export_set *s, const struct serve_config *cfg)
{
  size_t max = cfg->nr_extra + 1;

  memset (s, 0, sizeof *s);
  s->cap = max;
  s->list = calloc (max, sizeof *s->list);
  s->backends = calloc (max, sizeof *s->backends);
  s->words = calloc (max, sizeof *s->words);
  if (!s->list || !s->backends || !s->words)
    fatal ("calloc: %m");
  if (cfg->backend) {
    int r = backend_config (&s->backends[0], cfg->backend, cfg->params,
                            cfg->nr_params, cfg->readonly);
    if (r < 0)
      return r;
    s->list[0] = (struct export) { cfg->export_name, cfg->description,
                                   &s->backends[0] };
    s->n = 1;
  }
  for (size_t i = 0; i < cfg->nr_extra; i++, s->n++) {
    int r = config_spec (s, cfg->extra[i], cfg->readonly);
    if (r < 0)
      return r;
  }
  return names_unique (s) ? 0 : -1;
}

int
exports_open (struct export_set *s)
{
  for (size_t i = 0; i < s->n; i++)
    if (backend_open (&s->backends[i]) == -1)
      return -1;
  return 0;
}

bool
exports_need_workers (const struct export_set *s)
{
  for (size_t i = 0; i < s->n; i++)
    if (backend_needs_workers (&s->backends[i]))
      return true;
  return false;
}

void
exports_close (struct export_set *s, bool flush)
{
  for (size_t i = 0; s->backends && i < s->cap; i++) {
    struct backend *b = &s->backends[i];
    if (flush && i < s->n)
      backend_flush_at_exit (b, s->list[i].name);
    backend_close (b);
  }
  for (size_t i = 0; s->words && i < s->cap; i++)
    free (s->words[i]);
  free (s->words);
  free (s->backends);
  free (s->list);
  memset (s, 0, sizeof *s);
}
