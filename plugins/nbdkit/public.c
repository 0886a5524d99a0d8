/* The nbdkit_* utility functions that nbdkit plugins call, with nbdkit
 * 1.32's semantics (messages, error returns, errno), implemented for
 * ubdkit.  Every function here reports failure with nbdkit_error and
 * returns -1 (or NULL), as nbdkit's do; nbdkit_error and nbdkit_debug
 * preserve errno, because plugins with errno_is_preserved rely on it.
 *
 * The peer_* functions ask the client's socket, which the host sets for
 * the calling thread around each call for a connection; a ublk device has
 * none (ENOTSUP, as nbdkit where the platform lacks the query).  The
 * thread's connection is a small stack: a filter call pushes its
 * connection, the plugin at the bottom of the chain pushes its own over
 * it, and the filter finds its own again when the plugin call returned.
 */
#include <config.h>

#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "log.h"
#include "plughost.h"

#define CONN_DEPTH 8             /* a filter call, the plugin under it */

static __thread int thread_error;
static const char *plugin_name = "nbdkit";
/* The thread's connections: tconn[0] is "none", tconn[depth] current. */
static __thread struct plughost_thread_conn tconn[CONN_DEPTH] = {
  [0] = { .export_name = NULL, .peer_fd = PLUGHOST_NO_PEER },
};
static __thread unsigned depth;
#define CUR (&tconn[depth])
static bool configured;
static volatile sig_atomic_t shutdown_requested;

void plughost_error_reset (void) { thread_error = 0; }
int plughost_error_get (void) { return thread_error; }
void plughost_set_plugin_name (const char *name) { plugin_name = name; }
void plughost_set_configured (void) { configured = true; }
void plughost_set_export_name (const char *name) { CUR->export_name = name; }
const struct plughost_thread_conn *plughost_conn_get (void)
{ return CUR; }

void
plughost_conn_push (const struct plughost_thread_conn *s)
{
  assert (depth + 1 < CONN_DEPTH);
  depth++;
  *CUR = *s;
}

void
plughost_conn_pop (void)
{
  assert (depth > 0);
  depth--;
}

/* Messages. */

void
nbdkit_verror (const char *fmt, va_list ap)
{
  int err = errno;
  char msg[1024];

  vsnprintf (msg, sizeof msg, fmt, ap);         /* %m sees err */
  if (CUR->in_request)
    log_ratelimited ("%s: %s", plugin_name, msg);
  else
    log_error ("%s: %s", plugin_name, msg);
  errno = err;
}

void
nbdkit_error (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  nbdkit_verror (fmt, ap);
  va_end (ap);
}

void
nbdkit_vdebug (const char *fmt, va_list ap)
{
  int err = errno;
  char msg[1024];

  /* nbdkit prints plugin debug messages only with -v; so do we. */
  if (CUR->in_request ? log_debug_data : log_debug_control) {
    vsnprintf (msg, sizeof msg, fmt, ap);
    log_msg (LOG_DEBUG, "%s: %s", plugin_name, msg);
  }
  errno = err;
}

void
nbdkit_debug (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  nbdkit_vdebug (fmt, ap);
  va_end (ap);
}

void
nbdkit_set_error (int err)
{
  thread_error = err;
}

/* Parsing.  Integers: strtol with base 0, no trailing text; unsigned
 * types refuse a minus sign (strtoul would wrap it). */

static int
parse_tail (const char *what, const char *str, const char *end, int err)
{
  if (err) {
    errno = err;
    nbdkit_error ("%s: could not parse number: \"%s\": %m", what, str);
    return -1;
  }
  if (end == str) {
    nbdkit_error ("%s: empty string where we expected a number", what);
    return -1;
  }
  if (*end) {
    nbdkit_error ("%s: could not parse number: \"%s\": trailing garbage",
                  what, str);
    return -1;
  }
  return 0;
}

static int
parse_signed (const char *what, const char *str, long long min,
              long long max, long long *r)
{
  char *end;

  errno = 0;
  *r = strtoll (str, &end, 0);
  if (errno == 0 && (*r < min || *r > max))
    errno = ERANGE;
  return parse_tail (what, str, end, errno);
}

static int
parse_unsigned (const char *what, const char *str, unsigned long long max,
                unsigned long long *r)
{
  const char *s = str;
  char *end;

  while (*s == ' ' || (*s >= '\t' && *s <= '\r'))
    s++;
  if (*s == '-') {
    nbdkit_error ("%s: negative numbers are not allowed", what);
    return -1;
  }
  errno = 0;
  *r = strtoull (str, &end, 0);
  if (errno == 0 && *r > max)
    errno = ERANGE;
  return parse_tail (what, str, end, errno);
}

#define PARSE_SIGNED(fn, type, min, max)                                \
  int fn (const char *what, const char *str, type *rp)                 \
  {                                                                     \
    long long r;                                                        \
    if (parse_signed (what, str, min, max, &r) == -1)                   \
      return -1;                                                        \
    if (rp)                                                             \
      *rp = r;                                                          \
    return 0;                                                           \
  }
#define PARSE_UNSIGNED(fn, type, max)                                   \
  int fn (const char *what, const char *str, type *rp)                 \
  {                                                                     \
    unsigned long long r;                                               \
    if (parse_unsigned (what, str, max, &r) == -1)                      \
      return -1;                                                        \
    if (rp)                                                             \
      *rp = r;                                                          \
    return 0;                                                           \
  }

PARSE_SIGNED (nbdkit_parse_int, int, INT_MIN, INT_MAX)
PARSE_SIGNED (nbdkit_parse_int8_t, int8_t, INT8_MIN, INT8_MAX)
PARSE_SIGNED (nbdkit_parse_int16_t, int16_t, INT16_MIN, INT16_MAX)
PARSE_SIGNED (nbdkit_parse_int32_t, int32_t, INT32_MIN, INT32_MAX)
PARSE_SIGNED (nbdkit_parse_int64_t, int64_t, INT64_MIN, INT64_MAX)
PARSE_UNSIGNED (nbdkit_parse_unsigned, unsigned, UINT_MAX)
PARSE_UNSIGNED (nbdkit_parse_uint8_t, uint8_t, UINT8_MAX)
PARSE_UNSIGNED (nbdkit_parse_uint16_t, uint16_t, UINT16_MAX)
PARSE_UNSIGNED (nbdkit_parse_uint32_t, uint32_t, UINT32_MAX)
PARSE_UNSIGNED (nbdkit_parse_uint64_t, uint64_t, UINT64_MAX)

/* A decimal number with an optional one-letter suffix: b, k/K ... e/E
 * (powers of 1024) or s (512-byte sectors). */
int64_t
nbdkit_parse_size (const char *str)
{
  static const char scales[] = "bkmgtpe";
  const char *p;
  uint64_t scale = 1;
  int64_t size;
  char *end;

  errno = 0;
  size = strtoimax (str, &end, 10);
  if (end == str) {
    nbdkit_error ("could not parse size string (%s)", str);
    return -1;
  }
  if (size < 0) {
    nbdkit_error ("size cannot be negative (%s)", str);
    return -1;
  }
  if (errno) {
    nbdkit_error ("size (%s) exceeds maximum value", str);
    return -1;
  }
  if (*end == 's' || *end == 'S')
    scale = 512;
  else if (*end && (p = strchr (scales, *end | 0x20)) != NULL)
    scale = UINT64_C (1) << (10 * (p - scales));
  else if (*end) {
    nbdkit_error ("could not parse size: unknown suffix '%s'", end);
    return -1;
  }
  if (*end && end[1]) {
    nbdkit_error ("could not parse size: unknown suffix '%s'", end);
    return -1;
  }
  if (INT64_MAX / scale < (uint64_t) size) {
    nbdkit_error ("overflow computing size (%s)", str);
    return -1;
  }
  return size * scale;
}

int
nbdkit_parse_bool (const char *str)
{
  static const char *const yes[] = { "true", "t", "yes", "y", "on", NULL };
  static const char *const no[] = { "false", "f", "no", "n", "off", NULL };

  if (strcmp (str, "1") == 0)
    return 1;
  if (strcmp (str, "0") == 0)
    return 0;
  for (size_t i = 0; yes[i]; i++)
    if (strcasecmp (str, yes[i]) == 0)
      return 1;
  for (size_t i = 0; no[i]; i++)
    if (strcasecmp (str, no[i]) == 0)
      return 0;
  nbdkit_error ("could not decipher boolean (%s)", str);
  return -1;
}

/* Paths. */

char *
nbdkit_absolute_path (const char *path)
{
  char *cwd, *ret;

  if (path == NULL || *path == '\0') {
    nbdkit_error ("cannot convert null or empty path to an absolute path");
    return NULL;
  }
  if (*path == '/') {
    ret = strdup (path);
    if (!ret)
      nbdkit_error ("strdup: %m");
    return ret;
  }
  cwd = getcwd (NULL, 0);
  if (!cwd) {
    nbdkit_error ("getcwd: %m");
    return NULL;
  }
  if (asprintf (&ret, "%s/%s", cwd, path) == -1) {
    nbdkit_error ("asprintf: %m");
    ret = NULL;
  }
  free (cwd);
  return ret;
}

char *
nbdkit_realpath (const char *path)
{
  char *ret;

  if (path == NULL || *path == '\0') {
    nbdkit_error ("cannot resolve a null or empty path");
    return NULL;
  }
  ret = realpath (path, NULL);
  if (!ret)
    nbdkit_error ("realpath: %s: %m", path);
  return ret;
}

/* stdin and stdout belong to the plugin until configuration is complete
 * (ubdkit has no -s mode that would use them for NBD). */
int
nbdkit_stdio_safe (void)
{
  return !configured;
}

/* Read one line (without its newline) from F into *password; EOF is an
 * empty password. */
static int
read_password_line (const char *what, FILE *f, char **password)
{
  size_t n = 0;
  ssize_t r;

  errno = 0;
  r = getline (password, &n, f);
  if (r == -1) {
    if (errno) {
      nbdkit_error ("could not read password from %s: %m", what);
      return -1;
    }
    free (*password);
    *password = strdup ("");
    if (!*password) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
    return 0;
  }
  if (r > 0 && (*password)[r - 1] == '\n')
    (*password)[r - 1] = '\0';
  return 0;
}

static int
read_password_tty (char **password)
{
  struct termios orig, quiet;
  int r;

  if (!nbdkit_stdio_safe ()) {
    nbdkit_error ("stdin is not available for reading password");
    return -1;
  }
  if (!isatty (STDIN_FILENO)) {
    nbdkit_error ("stdin is not a tty, cannot read password interactively");
    return -1;
  }
  printf ("password: ");
  fflush (stdout);
  tcgetattr (STDIN_FILENO, &orig);      /* best effort, as nbdkit */
  quiet = orig;
  quiet.c_lflag &= ~ECHO;
  tcsetattr (STDIN_FILENO, TCSAFLUSH, &quiet);
  r = read_password_line ("stdin", stdin, password);
  tcsetattr (STDIN_FILENO, TCSAFLUSH, &orig);
  printf ("\n");
  return r;
}

/* "-": from the terminal; "-FD": from that descriptor (closed after);
 * "+FILE": from the file; anything else is the password itself. */
int
nbdkit_read_password (const char *value, char **password)
{
  FILE *f;
  int fd, r;

  *password = NULL;
  if (strcmp (value, "-") == 0)
    return read_password_tty (password);
  if (value[0] == '-') {
    if (nbdkit_parse_int ("password file descriptor", value + 1, &fd) == -1)
      return -1;
    if (fd >= 0 && fd <= 2) {
      nbdkit_error ("cannot use password -FD for stdin/stdout/stderr");
      return -1;
    }
  }
  else if (value[0] == '+') {
    fd = open (value + 1, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
      nbdkit_error ("open %s: %m", value + 1);
      return -1;
    }
  }
  else {
    *password = strdup (value);
    if (!*password) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
    return 0;
  }
  f = fdopen (fd, "r");
  if (!f) {
    nbdkit_error ("fdopen %s: %m", value + 1);
    close (fd);
    return -1;
  }
  r = read_password_line (value + 1, f, password);
  fclose (f);
  return r;
}

/* Connection and server state. */

/* Sleeps, but gives up (ESHUTDOWN) once nbdkit_shutdown was called, so a
 * plugin stuck in a sleep loop does not hold up the exit for long. */
int
nbdkit_nanosleep (unsigned sec, unsigned nsec)
{
  struct timespec ts;

  if (sec >= INT_MAX - nsec / 1000000000) {
    nbdkit_error ("sleep request is too long");
    errno = EINVAL;
    return -1;
  }
  ts.tv_sec = sec + nsec / 1000000000;
  ts.tv_nsec = nsec % 1000000000;
  while (!shutdown_requested && nanosleep (&ts, &ts) == -1) {
    if (errno != EINTR) {
      nbdkit_error ("nanosleep: %m");
      return -1;
    }
  }
  if (shutdown_requested) {
    nbdkit_error ("aborting sleep to shut down");
    errno = ESHUTDOWN;
    return -1;
  }
  return 0;
}

/* Ask the server to exit as a SIGTERM does: the main thread takes it from
 * its signalfd and finishes the requests in flight.
 *
 * Before serving (config_complete, get_ready: the main thread, before it
 * blocked the signals for its signalfd) a SIGTERM would kill us with
 * status 143, where nbdkit exits 0: so the signal is blocked on this
 * thread first and sent to it alone, pending until the signalfd takes
 * it as soon as ubdkit serves, which then exits 0. */
void
nbdkit_shutdown (void)
{
  sigset_t term, old;

  shutdown_requested = 1;
  sigemptyset (&term);
  sigaddset (&term, SIGTERM);
  pthread_sigmask (SIG_BLOCK, &term, &old);
  if (sigismember (&old, SIGTERM))
    kill (getpid (), SIGTERM);
  else
    raise (SIGTERM);
}

const char *
nbdkit_export_name (void)
{
  if (!CUR->export_name) {
    nbdkit_error ("no connection in this thread");
    return NULL;
  }
  return CUR->export_name;
}

/* Whether the client negotiated TLS: known from the moment it connected
 * (preconnect: not yet), in list_exports, default_export and open as in
 * the calls after it. */
int
nbdkit_is_tls (void)
{
  if (CUR->peer_fd == PLUGHOST_NO_PEER) {
    nbdkit_error ("no connection in this thread");
    return -1;
  }
  return CUR->tls;
}

/* The calling thread's client socket, or -1 after nbdkit_error. */
static int
peer_socket (const char *fn)
{
  if (CUR->peer_fd == PLUGHOST_NO_PEER) {
    nbdkit_error ("%s: no connection in this thread", fn);
    errno = EINVAL;
    return -1;
  }
  if (CUR->peer_fd == -1) {
    nbdkit_error ("%s: the client is a ublk device, not a socket", fn);
    errno = ENOTSUP;
    return -1;
  }
  return CUR->peer_fd;
}

int
nbdkit_peer_name (struct sockaddr *addr, socklen_t *addrlen)
{
  int s = peer_socket (__func__);

  if (s == -1)
    return -1;
  if (getpeername (s, addr, addrlen) == -1) {
    nbdkit_error ("peername: %m");
    return -1;
  }
  return 0;
}

/* The credentials of a client on a Unix domain socket (only those have
 * them: ENOTSUP for TCP, as nbdkit). */
static int
peer_cred (const char *fn, struct ucred *cred)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int s = peer_socket (fn);

  if (s == -1)
    return -1;
  if (getsockname (s, (struct sockaddr *) &ss, &len) == -1) {
    nbdkit_error ("%s: getsockname: %m", fn);
    return -1;
  }
  if (ss.ss_family != AF_UNIX) {
    nbdkit_error ("%s: only available for clients on a Unix domain socket",
                  fn);
    errno = ENOTSUP;
    return -1;
  }
  len = sizeof *cred;
  if (getsockopt (s, SOL_SOCKET, SO_PEERCRED, cred, &len) == -1) {
    nbdkit_error ("%s: SO_PEERCRED: %m", fn);
    return -1;
  }
  return 0;
}

int64_t
nbdkit_peer_pid (void)
{
  struct ucred cred;

  return peer_cred (__func__, &cred) == -1 ? -1 : cred.pid;
}

int64_t
nbdkit_peer_uid (void)
{
  struct ucred cred;

  return peer_cred (__func__, &cred) == -1 ? -1 : (int64_t) cred.uid;
}

int64_t
nbdkit_peer_gid (void)
{
  struct ucred cred;

  return peer_cred (__func__, &cred) == -1 ? -1 : (int64_t) cred.gid;
}
