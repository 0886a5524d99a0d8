/* `ubdkit del`, `list`, `features`, `resize`, `upgrade`: control commands
 * on devices served by other ubdkit processes. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "size.h"
#include "srvctl.h"
#include "control.h"
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

/* A process other than us holding /dev/ublkbID (of device number RDEV)
 * open: its pid, or 0. */
static pid_t
find_opener (dev_t rdev, char *comm, size_t len)
{
  DIR *proc = opendir ("/proc");
  struct dirent *p;
  pid_t found = 0;

  if (!proc)
    return 0;
  while (!found && (p = readdir (proc))) {
    char path[300];
    struct dirent *f;
    DIR *fds;
    pid_t pid = atoi (p->d_name);

    if (pid <= 0 || pid == getpid ())
      continue;
    snprintf (path, sizeof path, "/proc/%d/fd", (int) pid);
    fds = opendir (path);
    if (!fds)
      continue;
    while (!found && (f = readdir (fds))) {
      struct stat st;

      snprintf (path, sizeof path, "/proc/%d/fd/%s", (int) pid, f->d_name);
      if (f->d_name[0] != '.' && stat (path, &st) == 0 &&
          S_ISBLK (st.st_mode) && st.st_rdev == rdev)
        found = pid;
    }
    closedir (fds);
  }
  closedir (proc);
  if (found) {
    char path[64];
    FILE *f;

    snprintf (comm, len, "?");
    snprintf (path, sizeof path, "/proc/%d/comm", (int) found);
    if ((f = fopen (path, "r"))) {
      if (fgets (comm, len, f))
        comm[strcspn (comm, "\n")] = '\0';
      fclose (f);
    }
  }
  return found;
}

/* Without TRY_STOP_DEV (kernels before 6.19 or so): is the block device
 * in use?  An O_EXCL open fails with EBUSY while a filesystem is mounted
 * on it, swap is on it or another exclusive holder (dm, md) has it; a
 * plain open by a process shows in /proc/PID/fd.  Best effort: what opens
 * it after this check is not seen, nor a mapping without an open fd. */
static int
check_unused (uint32_t id)
{
  char path[64], comm[64];
  struct stat st;
  pid_t pid;
  int fd;

  snprintf (path, sizeof path, "/dev/ublkb%u", id);
  if (stat (path, &st) == -1)
    return 0;                   /* not started, or no node: nobody holds it */
  fd = open (path, O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK);
  if (fd == -1 && errno == EBUSY) {
    fprintf (stderr, "ubdkit del: device %u: %s is in use (mounted, swap or "
             "held by another device): not deleted (--force deletes it "
             "anyway)\n", id, path);
    return -1;
  }
  if (fd >= 0)
    close (fd);
  pid = find_opener (st.st_rdev, comm, sizeof comm);
  if (pid) {
    fprintf (stderr, "ubdkit del: device %u: %s is open by process %d (%s): "
             "not deleted (--force deletes it anyway)\n", id, path,
             (int) pid, comm);
    return -1;
  }
  return 0;
}

/* Ask the server to stop and delete its device; if it does not within
 * 10 s (or is gone), kill it and stop and delete the device ourselves.
 * Unless FORCE, a device in use is left alone: TRY_STOP_DEV, where the
 * kernel has it, stops the device only if its block device has no
 * opener, atomically; elsewhere check_unused looks first. */
static int
del_one (struct ubctl *ctl, uint32_t id, bool force)
{
  struct ublksrv_ctrl_dev_info info;
  int r = ubctl_get_info (ctl, id, &info);

  if (r < 0) {
    fprintf (stderr, "ubdkit del: device %u: %s\n", id, strerror (-r));
    return 1;
  }
  if (!force && (info.flags & UBLK_F_SAFE_STOP_DEV)) {
    r = ubctl_try_stop_dev (ctl, id);
    if (r == -EBUSY) {
      fprintf (stderr, "ubdkit del: device %u: /dev/ublkb%u is open "
               "(mounted, swap, or by a process): not deleted (--force "
               "deletes it anyway)\n", id, id);
      return 1;
    }
    if (r < 0 && r != -ENODEV) {
      fprintf (stderr, "ubdkit del: device %u: TRY_STOP_DEV: %s\n", id,
               strerror (-r));
      return 1;
    }
  }
  else if (!force && check_unused (id) == -1)
    return 1;
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
  uint64_t id = 0;
  bool force = false, all = false;
  size_t n;
  int status = 0, i;

  for (i = 1; i < argc && argv[i][0] == '-'; i++) {
    if (strcmp (argv[i], "--force") == 0 || strcmp (argv[i], "-f") == 0)
      force = true;
    else if (strcmp (argv[i], "--all") == 0)
      all = true;
    else
      break;
  }
  if (all ? i != argc
      : i != argc - 1 || size_parse_uint (argv[i], 0, UINT32_MAX, &id) == -1) {
    fprintf (stderr, "usage: ubdkit del [--force] ID | ubdkit del [--force] "
             "--all\n");
    return 2;
  }
  if (open_control (&ctl) < 0)
    return 1;
  if (all)
    n = list_ids (ids, sizeof ids / sizeof ids[0]);
  else {
    ids[0] = id;
    n = 1;
  }
  for (size_t k = 0; k < n; k++)
    status |= del_one (&ctl, ids[k], force);
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

/* The counters of device ID's server (daemon/stats.c), if it is live
 * and answers soon (a listing must not hang on a stuck server): a line of
 * text, or a "stats" member holding its JSON object. */
static void
print_counters (uint32_t id, int state, bool json)
{
  char target[16], buf[8192];

  if (state != UBLK_S_DEV_LIVE)
    return;
  snprintf (target, sizeof target, "%u", id);
  if (control_query (target, json ? "stats json" : "stats line", buf,
                     sizeof buf, true, 500) == -1)
    return;
  buf[strcspn (buf, "\n")] = '\0';
  if (json)
    printf (", \"stats\": %s", buf);
  else
    printf ("     counters: %s\n", buf);
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
            "     recovery: %s  flags: %s\n", id,
            ubctl_state_name (info.state), size, info.nr_hw_queues,
            info.queue_depth, (int) info.ublksrv_pid,
            io_flusher_state (info.ublksrv_pid), backend,
            ubctl_recovery_name (info.flags), flags);
    print_counters (id, info.state, false);
    return;
  }
  printf ("%s\n  { \"id\": %u, \"device\": \"/dev/ublkb%u\", \"state\": \"%s\", "
          "\"size\": %" PRIu64 ", \"queues\": %u, \"depth\": %u, "
          "\"max_io\": %u, \"pid\": %d, \"flags\": %" PRIu64 ", "
          "\"flag_names\": \"%s\", \"recovery\": \"%s\", "
          "\"io_flusher\": \"%s\", \"backend\": ",
          first ? "" : ",", id, id, ubctl_state_name (info.state), size,
          info.nr_hw_queues, info.queue_depth, info.max_io_buf_bytes,
          (int) info.ublksrv_pid, (uint64_t) info.flags, flags,
          ubctl_recovery_name (info.flags), io_flusher_state (info.ublksrv_pid));
  json_string (backend);
  print_counters (id, info.state, true);
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

/* The device's info, or 1 after printing why. */
static int
device_info (const char *prog, struct ubctl *ctl, uint32_t id,
             struct ublksrv_ctrl_dev_info *info)
{
  int r = ubctl_get_info (ctl, id, info);

  if (r < 0) {
    fprintf (stderr, "ubdkit %s: device %u: %s\n", prog, id,
             r == -ENODEV ? "no such device" : strerror (-r));
    return 1;
  }
  return 0;
}

/* `ubdkit resize [--shrink] ID [SIZE]`: as `losetup -c`, the server looks
 * at its backend's size again (the user grew the file or device) and
 * gives the device all of it, or SIZE of it; then we wait for the kernel
 * to show the new size. */
int
cmd_resize (int argc, char **argv)
{
  struct ublksrv_ctrl_dev_info info;
  struct ublk_params p;
  struct ubctl ctl;
  char req[128], reply[512];
  uint64_t id, size = 0, old, now;
  bool shrink = false;
  const char *why;
  int i = 1, r = 1;

  if (i < argc && strcmp (argv[i], "--shrink") == 0) {
    shrink = true;
    i++;
  }
  if (i >= argc || argc - i > 2 ||
      size_parse_uint (argv[i], 0, UINT32_MAX, &id) == -1 ||
      (argc - i == 2 && (size_parse (argv[i + 1], &size, &why) == -1 ||
                         size == 0))) {
    fprintf (stderr, "usage: ubdkit resize [--shrink] ID [SIZE]\n");
    return 2;
  }
  if (open_control (&ctl) < 0)
    return 1;
  if (device_info ("resize", &ctl, id, &info))
    goto out;
  if (!(info.flags & UBLK_F_UPDATE_SIZE)) {
    if (!(ctl.features & UBLK_F_UPDATE_SIZE))
      fprintf (stderr, "ubdkit resize: device %u: the kernel lacks "
               "UPDATE_SIZE (ublk features 0x%llx): a ublk device cannot "
               "change size here\n", (unsigned) id,
               (unsigned long long) ctl.features);
    else
      fprintf (stderr, "ubdkit resize: device %u was created without "
               "UPDATE_SIZE (by an older ubdkit?): delete and add it "
               "again\n", (unsigned) id);
    goto out;
  }
  snprintf (req, sizeof req, "resize %" PRIu64 " %d", size, shrink);
  if (srvctl_request ("resize", id, req, reply, sizeof reply, 30) == -1)
    goto out;
  if (strncmp (reply, "ok ", 3) != 0 ||
      sscanf (reply + 3, "%" SCNu64 " %" SCNu64, &old, &size) != 2) {
    fprintf (stderr, "ubdkit resize: device %u: %s\n", (unsigned) id,
             strncmp (reply, "error ", 6) == 0 ? reply + 6 : reply);
    goto out;
  }
  for (int ms = 0; ms <= 10000; ms += 50) {
    if (ubctl_get_params (&ctl, id, &p) == 0 &&
        p.basic.dev_sectors == size >> 9) {
      printf ("/dev/ublkb%u: %" PRIu64 " -> %" PRIu64 " bytes\n",
              (unsigned) id, old, size);
      r = 0;
      goto out;
    }
    sleep_ms (50);
  }
  now = ubctl_get_params (&ctl, id, &p) == 0 ? p.basic.dev_sectors << 9 : 0;
  fprintf (stderr, "ubdkit resize: device %u: the server asked for %" PRIu64
           " bytes, but the kernel still shows %" PRIu64 "\n", (unsigned) id,
           size, now);
 out:
  ubctl_close (&ctl);
  return r;
}

/* `ubdkit upgrade ID`: the server hands the device over (quiesced where
 * the kernel has QUIESCE) and its supervisor re-executes the ubdkit binary
 * now on disk, whose server re-attaches.  We wait for that server. */
int
cmd_upgrade (int argc, char **argv)
{
  struct ublksrv_ctrl_dev_info info;
  struct ubctl ctl;
  char reply[512], exe[4096], path[64];
  uint64_t id;
  pid_t old;
  ssize_t n;
  int r = 1;

  if (argc != 2 || size_parse_uint (argv[1], 0, UINT32_MAX, &id) == -1) {
    fprintf (stderr, "usage: ubdkit upgrade ID\n");
    return 2;
  }
  if (open_control (&ctl) < 0)
    return 1;
  if (device_info ("upgrade", &ctl, id, &info))
    goto out;
  if (!(info.flags & UBLK_F_USER_RECOVERY)) {
    fprintf (stderr, "ubdkit upgrade: device %u was created without user "
             "recovery (--recovery=off): it cannot change servers\n",
             (unsigned) id);
    goto out;
  }
  if (info.state != UBLK_S_DEV_LIVE || info.ublksrv_pid <= 0) {
    fprintf (stderr, "ubdkit upgrade: device %u is %s, not live: its server "
             "is not running\n", (unsigned) id, ubctl_state_name (info.state));
    goto out;
  }
  old = info.ublksrv_pid;
  if (srvctl_request ("upgrade", id, "upgrade", reply, sizeof reply, 120) == -1)
    goto out;
  if (strncmp (reply, "ok ", 3) != 0) {
    fprintf (stderr, "ubdkit upgrade: device %u: %s\n", (unsigned) id,
             strncmp (reply, "error ", 6) == 0 ? reply + 6 : reply);
    goto out;
  }
  /* "ok quiesced ..." or "ok exit ...": what happened, for the user. */
  {
    char *how = reply + 3, *text = strchr (how, ' ');
    printf ("/dev/ublkb%u: %s\n", (unsigned) id, text ? text + 1 : how);
  }
  for (int ms = 0; ms <= 120000; ms += 100) {
    if (ubctl_get_info (&ctl, id, &info) == 0 &&
        info.state == UBLK_S_DEV_LIVE && info.ublksrv_pid > 0 &&
        info.ublksrv_pid != old)
      break;
    sleep_ms (100);
  }
  if (info.state != UBLK_S_DEV_LIVE || info.ublksrv_pid == old) {
    fprintf (stderr, "ubdkit upgrade: device %u: no new server after 120 s "
             "(state %s): see the supervisor's log\n", (unsigned) id,
             ubctl_state_name (info.state));
    goto out;
  }
  snprintf (path, sizeof path, "/proc/%d/exe", (int) info.ublksrv_pid);
  n = readlink (path, exe, sizeof exe - 1);
  exe[n > 0 ? n : 0] = '\0';
  if (n > 0 && strstr (exe, " (deleted)")) {
    fprintf (stderr, "ubdkit upgrade: device %u: server %d took over, but "
             "runs the old binary (%s): the new one did not start (see the "
             "supervisor's log)\n", (unsigned) id, (int) info.ublksrv_pid, exe);
    goto out;
  }
  printf ("/dev/ublkb%u: server %d replaced by %d (%s)\n", (unsigned) id,
          (int) old, (int) info.ublksrv_pid, n > 0 ? exe : "?");
  r = 0;
 out:
  ubctl_close (&ctl);
  return r;
}
