/* `ubdkit up [--config-dir DIR] [--all | NAME...]` and `ubdkit down
 * [--config-dir DIR] [--force] [--all | NAME...]`.
 *
 * DIR/NAME.conf describes one device in KEY=VALUE lines (blank lines and
 * '#' comments skipped, no quoting, the value runs to the end of the line):
 *   BACKEND=file                      the backend (required)
 *   ID=5                              fixed device id: /dev/ublkb5 (optional)
 *   OPTIONS=--queues 2 --depth 128    `ubdkit add` options, split on blanks
 *   file=/var/lib/ubdkit/data.img     any other key: a backend parameter
 * Upper-case keys are ubdkit's; an unknown one is an error, so that a
 * typo is not passed to the backend.
 *
 * `up` runs `ubdkit add` (this same binary) for each device, so each gets
 * its own supervisor exactly as a hand-typed add would, and records the
 * device id in DEVICES_STATE_DIR/NAME; a device already up is left as it
 * is.  `down` deletes it as `ubdkit del` does, refusing a device still in
 * use (mounted, swap) unless --force.  Both are idempotent, as a unit's
 * start and stop must be.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices.h"
#include "log.h"
#include "size.h"
#include "ublk.h"

#define MAX_ARGS 128

struct device_conf {
  char name[256];
  char path[4096];
  char text[8192];              /* the file; args point into it */
  char *backend;
  long id;                      /* -1: the kernel picks */
  char *args[MAX_ARGS];         /* OPTIONS words, then backend params */
  int nr_options, nr_params;
};

static int
bad_conf (const struct device_conf *c, int line, const char *what)
{
  fprintf (stderr, "ubdkit: %s:%d: %s\n", c->path, line, what);
  return -1;
}

static bool
valid_name (const char *name)
{
  if (!name[0] || name[0] == '.' || strlen (name) > 200)
    return false;
  return strspn (name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "0123456789_.-@") == strlen (name);
}

/* Split one KEY=VALUE line of c->text into place. */
static int
conf_line (struct device_conf *c, char *s, int line, char **params,
           int *nr_params)
{
  char *eq = strchr (s, '='), *w;
  uint64_t v;

  if (!eq || eq == s || strcspn (s, " \t") < (size_t) (eq - s))
    return bad_conf (c, line, "expected KEY=VALUE");
  *eq = '\0';
  if (strcmp (s, "BACKEND") == 0)
    c->backend = eq + 1;
  else if (strcmp (s, "ID") == 0) {
    if (size_parse_uint (eq + 1, 0, 1 << 20, &v) == -1)
      return bad_conf (c, line, "ID: expected a device number");
    c->id = v;
  }
  else if (strcmp (s, "OPTIONS") == 0) {
    for (w = strtok (eq + 1, " \t"); w; w = strtok (NULL, " \t")) {
      if (c->nr_options >= MAX_ARGS / 2)
        return bad_conf (c, line, "OPTIONS: too many words");
      c->args[c->nr_options++] = w;
    }
  }
  else if (strspn (s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") == strlen (s))
    return bad_conf (c, line, "unknown key (BACKEND, ID, OPTIONS; backend "
                     "parameters are lower-case)");
  else {
    *eq = '=';                  /* a backend's key=value, as it is */
    if (*nr_params >= MAX_ARGS / 2)
      return bad_conf (c, line, "too many backend parameters");
    params[(*nr_params)++] = s;
  }
  return 0;
}

/* Read DIR/NAME.conf.  Returns 0, or -1 after a one-line error. */
static int
conf_read (struct device_conf *c, const char *dir, const char *name)
{
  char *params[MAX_ARGS / 2], *s, *next;
  int nr_params = 0, line = 0;
  size_t len;
  FILE *f;

  memset (c, 0, sizeof *c);
  c->id = -1;
  snprintf (c->path, sizeof c->path, "%s/%s.conf", dir, name);
  if (!valid_name (name)) {
    fprintf (stderr, "ubdkit: invalid device name '%s' (letters, digits and "
             "_.-@)\n", name);
    return -1;
  }
  snprintf (c->name, sizeof c->name, "%s", name);
  f = fopen (c->path, "r");
  if (!f) {
    fprintf (stderr, "ubdkit: %s: %m\n", c->path);
    return -1;
  }
  len = fread (c->text, 1, sizeof c->text - 1, f);
  if (ferror (f) || !feof (f)) {
    fprintf (stderr, "ubdkit: %s: %s\n", c->path,
             ferror (f) ? strerror (errno) : "too long (8k at most)");
    fclose (f);
    return -1;
  }
  fclose (f);
  c->text[len] = '\0';
  for (s = c->text; s; s = next) {
    line++;
    next = strchr (s, '\n');
    if (next)
      *next++ = '\0';
    s += strspn (s, " \t");
    len = strlen (s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' ||
                       s[len - 1] == '\r'))
      s[--len] = '\0';
    if (s[0] == '\0' || s[0] == '#')
      continue;
    if (conf_line (c, s, line, params, &nr_params) == -1)
      return -1;
  }
  if (!c->backend || !c->backend[0])
    return bad_conf (c, line, "no BACKEND=");
  memcpy (c->args + c->nr_options, params, nr_params * sizeof params[0]);
  c->nr_params = nr_params;
  return 0;
}

static void
state_path (const char *name, char *buf, size_t len)
{
  snprintf (buf, len, DEVICES_STATE_DIR "/%s", name);
}

/* The id of the device `up` made for NAME, or its fixed ID, or -1. */
static long
device_id (const struct device_conf *c)
{
  char path[512];
  unsigned id;
  FILE *f;
  int n;

  if (c->id >= 0)
    return c->id;
  state_path (c->name, path, sizeof path);
  f = fopen (path, "r");
  if (!f)
    return -1;
  n = fscanf (f, "%u", &id);
  fclose (f);
  return n == 1 ? (long) id : -1;
}

static bool
device_exists (long id)
{
  char path[64];

  snprintf (path, sizeof path, "/sys/class/ublk-char/ublkc%ld", id);
  return id >= 0 && access (path, F_OK) == 0;
}

static void
state_write (const char *name, unsigned id)
{
  char path[512];
  FILE *f;

  mkdir (UBDKIT_RUNDIR, 0755);
  mkdir (DEVICES_STATE_DIR, 0755);
  state_path (name, path, sizeof path);
  f = fopen (path, "w");
  if (!f || fprintf (f, "%u\n", id) < 0 || fclose (f) != 0)
    fprintf (stderr, "ubdkit up: %s: %m (`ubdkit down %s` will not find "
             "the device)\n", path, name);
}

/* Run `ubdkit add ...` for C; its stdout (the device path) comes back in
 * OUT.  Returns add's exit status. */
static int
run_add (const struct device_conf *c, char *out, size_t len)
{
  char *argv[MAX_ARGS + 8], idbuf[24], self[4096];
  int n = 0, p[2], status;
  ssize_t r;
  size_t got = 0;
  pid_t pid;

  argv[n++] = (char *) "ubdkit";
  argv[n++] = (char *) "add";
  for (int i = 0; i < c->nr_options; i++)
    argv[n++] = c->args[i];
  if (c->id >= 0) {
    snprintf (idbuf, sizeof idbuf, "%ld", c->id);
    argv[n++] = (char *) "--id";
    argv[n++] = idbuf;
  }
  argv[n++] = c->backend;
  for (int i = 0; i < c->nr_params; i++)
    argv[n++] = c->args[c->nr_options + i];
  argv[n] = NULL;
  /* The binary's path, not /proc/self/exe itself: under valgrind only
   * readlink is told the client's path. */
  r = readlink ("/proc/self/exe", self, sizeof self - 1);
  if (r <= 0) {
    fprintf (stderr, "ubdkit up: readlink /proc/self/exe: %m\n");
    return 1;
  }
  self[r] = '\0';
  if (pipe (p) == -1 || (pid = fork ()) == -1) {
    fprintf (stderr, "ubdkit up: %s: %m\n", c->name);
    return 1;
  }
  if (pid == 0) {
    dup2 (p[1], STDOUT_FILENO);
    close (p[0]);
    close (p[1]);
    execv (self, argv);
    fprintf (stderr, "ubdkit up: exec %s: %m\n", self);
    _exit (1);
  }
  close (p[1]);
  /* EOF once add's parent exits: the daemon keeps no copy of the pipe. */
  while ((r = read (p[0], out + got, len - 1 - got)) > 0 ||
         (r == -1 && errno == EINTR))
    got += r > 0 ? r : 0;
  out[got] = '\0';
  close (p[0]);
  while (waitpid (pid, &status, 0) == -1 && errno == EINTR)
    ;
  return WIFEXITED (status) ? WEXITSTATUS (status) : 1;
}

static int
up_one (const struct device_conf *c)
{
  char out[256];
  long id = device_id (c);
  unsigned dev;
  int r;

  if (device_exists (id)) {
    printf ("%s: already up: /dev/ublkb%ld\n", c->name, id);
    return 0;
  }
  r = run_add (c, out, sizeof out);
  if (r != 0) {
    fprintf (stderr, "ubdkit up: %s: ubdkit add failed (exit status %d)\n",
             c->name, r);
    return 1;
  }
  if (sscanf (out, "/dev/ublkb%u", &dev) != 1) {
    fprintf (stderr, "ubdkit up: %s: ubdkit add printed no device\n", c->name);
    return 1;
  }
  state_write (c->name, dev);
  printf ("%s: /dev/ublkb%u\n", c->name, dev);
  fflush (stdout);
  return 0;
}

static int
down_one (const struct device_conf *c, bool force)
{
  char idbuf[24], path[512];
  char *argv[] = { (char *) "del", (char *) "--force", idbuf, NULL };
  long id = device_id (c);
  int r;

  state_path (c->name, path, sizeof path);
  if (!device_exists (id)) {
    printf ("%s: not up\n", c->name);
    unlink (path);
    return 0;
  }
  snprintf (idbuf, sizeof idbuf, "%ld", id);
  if (!force)
    argv[1] = idbuf, argv[2] = NULL;
  r = cmd_del (force ? 3 : 2, argv);
  if (r != 0) {
    fprintf (stderr, "ubdkit down: %s: /dev/ublkb%ld not deleted\n", c->name,
             id);
    return 1;
  }
  unlink (path);
  printf ("%s: /dev/ublkb%ld deleted\n", c->name, id);
  return 0;
}

static int
conf_filter (const struct dirent *e)
{
  size_t n = strlen (e->d_name);

  return n > 5 && e->d_name[0] != '.' && strcmp (e->d_name + n - 5, ".conf") == 0;
}

/* 2 (a config error) over 1 (a device failed) over 0. */
static int
worst (int a, int b)
{
  return a > b ? a : b;
}

/* Run FN on each device named in argv[optind..], or, with --all, on every
 * DIR/ *.conf (in name order for up, the reverse for down). */
static int
for_each (const char *cmd, int argc, char **argv, const char *dir, bool all,
          bool reverse, int (*fn) (const struct device_conf *, bool),
          bool force)
{
  static struct device_conf c;  /* 12k: not on the stack */
  struct dirent **list = NULL;
  int n, status = 0;

  if (all == (optind < argc)) {
    fprintf (stderr, "usage: ubdkit %s [--config-dir DIR]%s --all | "
             "ubdkit %s [--config-dir DIR]%s NAME...\n", cmd,
             reverse ? " [--force]" : "", cmd, reverse ? " [--force]" : "");
    return 2;
  }
  if (!all) {
    for (int i = optind; i < argc; i++)
      status = worst (status, conf_read (&c, dir, argv[i]) == -1
                                ? 2 : fn (&c, force));
    return status;
  }
  n = scandir (dir, &list, conf_filter, alphasort);
  if (n == -1) {
    fprintf (stderr, "ubdkit %s: %s: %m\n", cmd, dir);
    return 2;
  }
  for (int k = 0; k < n; k++) {
    struct dirent *e = list[reverse ? n - 1 - k : k];
    e->d_name[strlen (e->d_name) - 5] = '\0';
    status = worst (status, conf_read (&c, dir, e->d_name) == -1
                              ? 2 : fn (&c, force));
  }
  for (int k = 0; k < n; k++)
    free (list[k]);
  free (list);
  return status;
}

static int
up_fn (const struct device_conf *c, bool force)
{
  (void) force;
  return up_one (c);
}

static void
devices_usage (bool is_down)
{
  if (is_down)
    printf ("Usage: ubdkit down [--config-dir DIR] [--force] [--all | NAME...]\n"
            "Delete the ublk devices DIR/NAME.conf describe (as ubdkit del).\n"
            "\n"
            "      --config-dir DIR  the configs (default " DEVICES_CONFIG_DIR ")\n"
            "      --all             every DIR/*.conf, in reverse name order\n"
            "  -f, --force           delete a device even if in use (mounted, swap)\n");
  else
    printf ("Usage: ubdkit up [--config-dir DIR] [--all | NAME...]\n"
            "Create the ublk devices DIR/NAME.conf describe (as ubdkit add),\n"
            "printing NAME: /dev/ublkbN for each; one already up is left alone.\n"
            "\n"
            "      --config-dir DIR  the configs (default " DEVICES_CONFIG_DIR ")\n"
            "      --all             every DIR/*.conf, in name order\n"
            "\n"
            "NAME.conf: KEY=VALUE lines: BACKEND=NAME (required), ID=N (fixed\n"
            "/dev/ublkbN), OPTIONS=ubdkit add options, and backend key=value.\n");
}

static int
devices_main (const char *cmd, int argc, char **argv, bool is_down)
{
  enum { O_DIR = 256, O_ALL, O_FORCE };
  static const struct option up_opts[] = {
    { "config-dir", required_argument, NULL, O_DIR },
    { "all", no_argument, NULL, O_ALL },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  static const struct option down_opts[] = {
    { "config-dir", required_argument, NULL, O_DIR },
    { "all", no_argument, NULL, O_ALL },
    { "force", no_argument, NULL, O_FORCE },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *dir = DEVICES_CONFIG_DIR;
  bool all = false, force = false;
  int c;

  optind = 1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, is_down ? "fh" : "h",
                           is_down ? down_opts : up_opts, NULL)) != -1) {
    switch (c) {
    case O_DIR: dir = optarg; break;
    case O_ALL: all = true; break;
    case 'f': case O_FORCE: force = true; break;
    case 'h': devices_usage (is_down); return 0;
    default:
      fprintf (stderr, "ubdkit %s: unknown option '%s'\n", cmd,
               argv[optind - 1]);
      return 2;
    }
  }
  return for_each (cmd, argc, argv, dir, all, is_down,
                   is_down ? down_one : up_fn, force);
}

int
cmd_up (int argc, char **argv)
{
  return devices_main ("up", argc, argv, false);
}

int
cmd_down (int argc, char **argv)
{
  return devices_main ("down", argc, argv, true);
}
