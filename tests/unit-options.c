/* `ubdkit serve` option parsing: defaults, every option, options after
 * the backend (as nbdkit allows), the embedded default backend, and the
 * errors that must give exit status 2. */
#include <config.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "serve.h"
#include "unit.h"

#define ARGV(...) ((char *[]) { "serve", __VA_ARGS__, NULL })
#define ARGC(v) ((int) (sizeof (v) / sizeof (v)[0]) - 1)

static int
parse (int argc, char **argv, struct serve_config *cfg)
{
  return serve_parse (argc, argv, cfg);
}

static void
test_defaults (void)
{
  struct serve_config cfg;
  char **v = ARGV ("memory", "size=1G");

  CHECK (parse (3, v, &cfg) == 0);
  CHECK (strcmp (cfg.backend, "memory") == 0);
  CHECK (cfg.nr_params == 1 && strcmp (cfg.params[0], "size=1G") == 0);
  CHECK (strcmp (cfg.port, "10809") == 0);     /* TCP when no -U */
  CHECK (cfg.unix_path == NULL);
  CHECK (strcmp (cfg.export_name, "") == 0);
  CHECK (cfg.server.depth == 32);
  CHECK (cfg.server.poll_us == 100);
  CHECK (cfg.server.buf_size == 1024 * 1024);
  CHECK (cfg.server.threads == (unsigned) sysconf (_SC_NPROCESSORS_ONLN));
  CHECK (cfg.progress.io_flusher == PROGRESS_IO_FLUSHER_ON);
  CHECK (cfg.progress.mlock && cfg.progress.oom_adjust);
  CHECK (cfg.progress.oom_score_adj == -1000);
}

static void
test_all_options (void)
{
  struct serve_config cfg;
  char *v[] = { "serve", "-U", "/tmp/s", "-p", "0", "--bind", "127.0.0.1",
                "-e", "disk", "--description", "d", "-r", "-t", "3",
                "--depth", "8", "--buffer-size", "1M", "--poll", "0",
                "--max-connections", "9", "-P", "/tmp/p",
                "--io-flusher=require", "--no-mlock", "--oom-score-adj=off",
                "file", "file=x", NULL };

  CHECK (parse (ARGC (v), v, &cfg) == 0);
  CHECK (strcmp (cfg.unix_path, "/tmp/s") == 0);
  CHECK (strcmp (cfg.port, "0") == 0);
  CHECK (strcmp (cfg.bind_addr, "127.0.0.1") == 0);
  CHECK (strcmp (cfg.export_name, "disk") == 0);
  CHECK (cfg.readonly);
  CHECK (cfg.server.threads == 3 && cfg.server.depth == 8);
  CHECK (cfg.server.buf_size == 1 << 20);
  CHECK (cfg.server.poll_us == 0);
  CHECK (cfg.server.max_connections == 9);
  CHECK (strcmp (cfg.pidfile, "/tmp/p") == 0);
  CHECK (cfg.progress.io_flusher == PROGRESS_IO_FLUSHER_REQUIRE);
  CHECK (!cfg.progress.mlock && !cfg.progress.oom_adjust);
  CHECK (strcmp (cfg.backend, "file") == 0 && cfg.nr_params == 1);
}

static void
test_options_after_backend (void)
{
  struct serve_config cfg;
  char *v[] = { "serve", "memory", "size=1M", "-U", "-", "--run", "true",
                "reserve=4k", NULL };

  CHECK (parse (ARGC (v), v, &cfg) == 0);
  CHECK (strcmp (cfg.backend, "memory") == 0);
  CHECK (cfg.nr_params == 2);
  CHECK (strcmp (cfg.unix_path, "-") == 0);
  CHECK (strcmp (cfg.run, "true") == 0);
  CHECK (cfg.port == NULL);                    /* -U only: no TCP */
}

static void
test_embedded_default (void)
{
  struct serve_config cfg;
  char *v[] = { "serve", NULL };

  CHECK (parse (1, v, &cfg) == 0);
  CHECK (strcmp (cfg.backend, "memory") == 0);
  CHECK (cfg.nr_params == 1 && strcmp (cfg.params[0], "size=1G") == 0);
}

static void
test_errors (void)
{
  static char *bad[][4] = {
    { "serve", "--no-such-option", "null", "size=1" },
    { "serve", "-t", "0", "null" },
    { "serve", "-t", "many", "null" },
    { "serve", "--depth", "0", "null" },
    { "serve", "--poll", "soon", "null" },
    { "serve", "--poll", "20000", "null" },
    { "serve", "--buffer-size", "1000", "null" },
    { "serve", "--buffer-size", "1G", "null" },
    { "serve", "-p", "70000", "null" },
    { "serve", "--io-flusher", "maybe", "null" },
    { "serve", "--oom-score-adj", "-2000", "null" },
    { "serve", "--daemonize", "--run=true", "null" },
  };
  struct serve_config cfg;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (parse (4, bad[i], &cfg) != -1)
      fprintf (stderr, "accepted: %s %s\n", bad[i][1], bad[i][2]);
    CHECK (parse (4, bad[i], &cfg) == -1);
  }
}

int
main (void)
{
  test_defaults ();
  test_all_options ();
  test_options_after_backend ();
  test_embedded_default ();
  test_errors ();
  UNIT_EXIT ();
}
