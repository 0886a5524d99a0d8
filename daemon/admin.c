/* `ubdkit del`, `ubdkit list`, `ubdkit features`: control commands on
 * devices served by other ubdkit processes. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "size.h"
#include "ubctl.h"
#include "ublk.h"

static int
open_control (struct ubctl *ctl)
{
  int r = ubctl_open (ctl);

  if (r == -ENOENT)
    fprintf (stderr, "ubdkit: " UBCTL_PATH " does not exist: load the "
             "ublk_drv kernel module (modprobe ublk_drv)\n");
  else if (r < 0)
    fprintf (stderr, "ubdkit: " UBCTL_PATH ": %s\n", strerror (-r));
  return r;
}

/* The ids of all ublk devices, from sysfs.  Returns how many. */
static size_t
list_ids (uint32_t *ids, size_t max)
{
  DIR *d = opendir ("/sys/class/ublk-char");
  struct dirent *e;
  size_t n = 0;

  if (!d)
    return 0;
  while ((e = readdir (d)) && n < max) {
    unsigned id;
    if (sscanf (e->d_name, "ublkc%u", &id) == 1)
      ids[n++] = id;
  }
  closedir (d);
  return n;
}

static void
sleep_ms (long ms)
{
  nanosleep (&(struct timespec) { ms / 1000, (ms % 1000) * 1000000 }, NULL);
}

/* Has process PID ended (gone, or a zombie nobody reaped yet)? */
static bool
process_ended (pid_t pid)
{
  char path[64], buf[256], *p;
  FILE *f;
  bool zombie = false;

  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  f = fopen (path, "r");
  if (!f)
    return true;
  if (fgets (buf, sizeof buf, f) && (p = strrchr (buf, ')')))
    zombie = p[1] == ' ' && p[2] == 'Z';
  fclose (f);
  return zombie;
}

static bool
wait_process_end (pid_t pid, int ms)
{
  for (int waited = 0; waited <= ms; waited += 50) {
    if (process_ended (pid))
      return true;
    sleep_ms (50);
  }
  return false;
}

/* Ask the server to stop and delete its device; if it does not within
 * 10 s (or is gone), kill it and stop and delete the device ourselves. */
static int
del_one (struct ubctl *ctl, uint32_t id)
{
  struct ublksrv_ctrl_dev_info info;
  int r = ubctl_get_info (ctl, id, &info);

  if (r < 0) {
    fprintf (stderr, "ubdkit del: device %u: %s\n", id, strerror (-r));
    return 1;
  }
  /* The server stops and deletes its own device on SIGTERM. */
  if (info.ublksrv_pid > 0 && kill (info.ublksrv_pid, SIGTERM) == 0 &&
      wait_process_end (info.ublksrv_pid, 10000))
    return 0;
  if (info.ublksrv_pid > 0 && kill (info.ublksrv_pid, SIGKILL) == 0)
    fprintf (stderr, "ubdkit del: device %u: server %d did not stop; killed\n",
             id, (int) info.ublksrv_pid);
  ubctl_stop_dev (ctl, id);
  r = ubctl_del_dev (ctl, id);
  if (r < 0 && r != -ENODEV) {
    fprintf (stderr, "ubdkit del: device %u: DEL_DEV: %s\n", id, strerror (-r));
    return 1;
  }
  return 0;
}

int
cmd_del (int argc, char **argv)
{
  struct ubctl ctl;
  uint32_t ids[1024];
  uint64_t id;
  size_t n;
  int status = 0;

  if (argc != 2 || (strcmp (argv[1], "--all") != 0 &&
                    size_parse_uint (argv[1], 0, UINT32_MAX, &id) == -1)) {
    fprintf (stderr, "usage: ubdkit del ID | ubdkit del --all\n");
    return 2;
  }
  if (open_control (&ctl) < 0)
    return 1;
  if (strcmp (argv[1], "--all") == 0)
    n = list_ids (ids, sizeof ids / sizeof ids[0]);
  else {
    ids[0] = id;
    n = 1;
  }
  for (size_t i = 0; i < n; i++)
    status |= del_one (&ctl, ids[i]);
  ubctl_close (&ctl);
  return status;
}

static void
read_backend (uint32_t id, char *buf, size_t len)
{
  char path[64];
  FILE *f;

  snprintf (path, sizeof path, UBDKIT_RUNDIR "/%u", id);
  snprintf (buf, len, "-");
  f = fopen (path, "r");
  if (!f)
    return;
  if (fgets (buf, len, f))
    buf[strcspn (buf, "\n")] = '\0';
  fclose (f);
}

/* Do all threads of PID have PF_MEMALLOC_NOIO and PF_LOCAL_THROTTLE (what
 * PR_SET_IO_FLUSHER sets)?  "yes", "no", or "?" if it cannot be read. */
static const char *
io_flusher_state (pid_t pid)
{
  const unsigned long want = 0x00080000 | 0x00100000;
  char path[320], buf[512], *p;
  struct dirent *e;
  int seen = 0, good = 0;
  DIR *d;

  snprintf (path, sizeof path, "/proc/%d/task", (int) pid);
  d = opendir (path);
  if (!d)
    return "?";
  while ((e = readdir (d))) {
    unsigned long flags = 0;
    FILE *f;

    if (e->d_name[0] == '.')
      continue;
    snprintf (path, sizeof path, "/proc/%d/task/%s/stat", (int) pid, e->d_name);
    f = fopen (path, "r");
    if (!f)
      continue;
    /* Field 9 (flags), counted after the ")" that ends the command name. */
    if (fgets (buf, sizeof buf, f) && (p = strrchr (buf, ')')) &&
        sscanf (p + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags) == 1) {
      seen++;
      good += (flags & want) == want;
    }
    fclose (f);
  }
  closedir (d);
  return seen == 0 ? "?" : seen == good ? "yes" : "no";
}

/* Print a JSON string (the backend arguments may hold anything). */
static void
json_string (const char *s)
{
  putchar ('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      printf ("\\%c", *s);
    else if ((unsigned char) *s < 0x20)
      printf ("\\u%04x", *s);
    else
      putchar (*s);
  }
  putchar ('"');
}

static void
print_device (struct ubctl *ctl, uint32_t id, bool json, bool first)
{
  struct ublksrv_ctrl_dev_info info;
  struct ublk_params p;
  char backend[1024], flags[512];
  uint64_t size = 0;

  if (ubctl_get_info (ctl, id, &info) < 0)
    return;
  if (ubctl_get_params (ctl, id, &p) == 0)
    size = p.basic.dev_sectors << 9;
  read_backend (id, backend, sizeof backend);
  ubctl_feature_names (info.flags, flags, sizeof flags);
  if (!json) {
    printf ("%-4u %-9s %-14" PRIu64 " %-3u %-5u %-8d %-4s %-s\n"
            "     flags: %s\n", id, ubctl_state_name (info.state), size,
            info.nr_hw_queues, info.queue_depth, (int) info.ublksrv_pid,
            io_flusher_state (info.ublksrv_pid), backend, flags);
    return;
  }
  printf ("%s\n  { \"id\": %u, \"device\": \"/dev/ublkb%u\", \"state\": \"%s\", "
          "\"size\": %" PRIu64 ", \"queues\": %u, \"depth\": %u, "
          "\"max_io\": %u, \"pid\": %d, \"flags\": %" PRIu64 ", "
          "\"flag_names\": \"%s\", \"io_flusher\": \"%s\", \"backend\": ",
          first ? "" : ",", id, id, ubctl_state_name (info.state), size,
          info.nr_hw_queues, info.queue_depth, info.max_io_buf_bytes,
          (int) info.ublksrv_pid, (uint64_t) info.flags, flags,
          io_flusher_state (info.ublksrv_pid));
  json_string (backend);
  printf (" }");
}

int
cmd_list (int argc, char **argv)
{
  bool json = argc == 2 && strcmp (argv[1], "--json") == 0;
  struct ubctl ctl;
  uint32_t ids[1024];
  size_t n;

  if (argc > 2 || (argc == 2 && !json)) {
    fprintf (stderr, "usage: ubdkit list [--json]\n");
    return 2;
  }
  if (open_control (&ctl) < 0)
    return 1;
  n = list_ids (ids, sizeof ids / sizeof ids[0]);
  if (json)
    printf ("[");
  else
    printf ("%-4s %-9s %-14s %-3s %-5s %-8s %-4s %s\n", "ID", "STATE", "SIZE",
            "Q", "DEPTH", "PID", "IOF", "BACKEND");
  for (size_t i = 0; i < n; i++)
    print_device (&ctl, ids[i], json, i == 0);
  if (json)
    printf ("\n]\n");
  ubctl_close (&ctl);
  return 0;
}

int
cmd_features (int argc, char **argv)
{
  struct ubctl ctl;
  char names[512];

  if (argc != 1) {
    fprintf (stderr, "usage: ubdkit features\n");
    return 2;
  }
  if (open_control (&ctl) < 0)
    return 1;
  if (!ctl.have_features)
    printf ("the kernel does not answer GET_FEATURES (older than 6.5?)\n");
  ubctl_feature_names (ctl.features, names, sizeof names);
  printf ("0x%llx", (unsigned long long) ctl.features);
  for (char *p = strtok (names, "|"); p; p = strtok (NULL, "|"))
    printf (" %s", p);
  printf ("\n");
  ubctl_close (&ctl);
  return 0;
}
