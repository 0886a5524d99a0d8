/* Listening sockets for `ubdkit serve`: Unix and TCP. */
#include <config.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "serve.h"
#include "systemd.h"

static int
listen_unix (struct listeners *ls, const char *path,
             const struct access_config *a)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct stat st;
  int fd;

  if (strcmp (path, "-") == 0) {
    char tmpl[] = "/tmp/ubdkitXXXXXX";
    if (!mkdtemp (tmpl)) {
      log_error ("mkdtemp: %m");
      return -1;
    }
    ls->tmpdir = strdup (tmpl);
    if (asprintf (&ls->unix_path, "%s/socket", tmpl) == -1)
      fatal ("asprintf: %m");
  }
  else
    ls->unix_path = strdup (path);
  if (strlen (ls->unix_path) >= sizeof sun.sun_path) {
    log_error ("-U %s: socket path too long", ls->unix_path);
    return -1;
  }
  /* A stale socket from a previous run is replaced; anything else is not. */
  if (lstat (ls->unix_path, &st) == 0 && !S_ISSOCK (st.st_mode)) {
    log_error ("-U %s: exists and is not a socket", ls->unix_path);
    free (ls->unix_path);
    ls->unix_path = NULL;
    return -1;
  }
  /* Bind a temporary name and rename it into place once listening, so the
   * socket never appears before it accepts: a client that waits for the
   * file and then connects is never refused. */
  if ((size_t) snprintf (sun.sun_path, sizeof sun.sun_path, "%s.%d",
                         ls->unix_path, (int) getpid ())
      >= sizeof sun.sun_path)
    strcpy (sun.sun_path, ls->unix_path);  /* no room: bind in place */
  unlink (sun.sun_path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  /* --unix-mode and --unix-group apply to the temporary name, so the
   * socket has them before any client can see it. */
  if (fd == -1 || bind (fd, (struct sockaddr *) &sun, sizeof sun) == -1 ||
      (a->unix_mode >= 0 && chmod (sun.sun_path, a->unix_mode) == -1) ||
      (a->unix_group && chown (sun.sun_path, -1, a->unix_gid) == -1) ||
      listen (fd, SOMAXCONN) == -1 ||
      (strcmp (sun.sun_path, ls->unix_path) != 0 &&
       rename (sun.sun_path, ls->unix_path) == -1)) {
    log_error ("-U %s: %m", ls->unix_path);
    if (fd >= 0) {
      if (strcmp (sun.sun_path, ls->unix_path) != 0)
        unlink (sun.sun_path);
      close (fd);
    }
    free (ls->unix_path);
    ls->unix_path = NULL;
    return -1;
  }
  ls->fds[ls->n++] = fd;
  return 0;
}

static int
bound_port (int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;

  if (getsockname (fd, (struct sockaddr *) &ss, &len) == -1)
    return -1;
  if (ss.ss_family == AF_INET)
    return ntohs (((struct sockaddr_in *) &ss)->sin_port);
  return ntohs (((struct sockaddr_in6 *) &ss)->sin6_port);
}

static int
listen_tcp (struct listeners *ls, const char *addr, const char *port)
{
  struct addrinfo hints = {
    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
    .ai_flags = AI_PASSIVE | AI_ADDRCONFIG,
  }, *res, *a;
  char portbuf[8];
  int r, one = 1;

  r = getaddrinfo (addr, port, &hints, &res);
  if (r) {
    log_error ("--bind %s -p %s: %s", addr ? addr : "*", port, gai_strerror (r));
    return -1;
  }
  for (a = res; a && ls->n < sizeof ls->fds / sizeof ls->fds[0]; a = a->ai_next) {
    int fd = socket (a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd == -1)
      continue;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a->ai_family == AF_INET6)
      setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind (fd, a->ai_addr, a->ai_addrlen) == -1 ||
        listen (fd, SOMAXCONN) == -1) {
      log_error ("listen on port %s: %m", port);
      close (fd);
      freeaddrinfo (res);
      return -1;
    }
    ls->fds[ls->n++] = fd;
    if (ls->port <= 0) {
      ls->port = bound_port (fd);
      /* With port 0, bind every address to the port the first one got. */
      snprintf (portbuf, sizeof portbuf, "%d", ls->port);
      port = portbuf;
    }
  }
  freeaddrinfo (res);
  if (ls->port <= 0) {
    log_error ("no address to listen on for port %s", port);
    return -1;
  }
  ls->host = addr ? addr : "localhost";
  return 0;
}

/* systemd socket activation: take the passed sockets (TCP, Unix, any
 * number up to our 16) instead of binding our own.  The URI names the
 * first Unix socket if there is one, else the first TCP port. */
static int
listen_activated (struct listeners *ls)
{
  const char *names[16];
  int n = systemd_listen_fds (ls->fds, names, sizeof ls->fds / sizeof ls->fds[0]);

  if (n == -1)
    return -1;
  ls->n = n;
  ls->activated = true;
  ls->host = "localhost";
  for (int i = 0; i < n; i++) {
    struct sockaddr_un sun;
    socklen_t len = sizeof sun;

    if (getsockname (ls->fds[i], (struct sockaddr *) &sun, &len) == -1) {
      log_error ("socket activation: fd %d: getsockname: %m", ls->fds[i]);
      return -1;
    }
    if (sun.sun_family == AF_UNIX && !ls->activated_path &&
        len > offsetof (struct sockaddr_un, sun_path) + 1) {
      if (sun.sun_path[0] == '\0')
        sun.sun_path[0] = '@';  /* abstract: libnbd's spelling */
      ls->activated_path = strndup (sun.sun_path,
                                    len - offsetof (struct sockaddr_un, sun_path));
    }
    else if ((sun.sun_family == AF_INET || sun.sun_family == AF_INET6) &&
             ls->port <= 0)
      ls->port = bound_port (ls->fds[i]);
    log_debug ("socket activation: fd %d%s%s", ls->fds[i],
               names[i][0] ? " named " : "", names[i]);
  }
  return 0;
}

int
listeners_open (struct listeners *ls, const struct serve_config *cfg)
{
  memset (ls, 0, sizeof *ls);
  ls->port = -1;
  ls->tls = cfg->server.tls.mode != TLS_OFF;
  if (cfg->socket_activation)
    return listen_activated (ls);
  if (cfg->unix_path && listen_unix (ls, cfg->unix_path, &cfg->access) == -1)
    return -1;
  if (cfg->port && listen_tcp (ls, cfg->bind_addr, cfg->port) == -1)
    return -1;
  return 0;
}

void
listeners_close (struct listeners *ls)
{
  for (size_t i = 0; i < ls->n; i++)
    close (ls->fds[i]);
  ls->n = 0;
  free (ls->activated_path);
  ls->activated_path = NULL;
  if (ls->unix_path) {
    unlink (ls->unix_path);
    free (ls->unix_path);
    ls->unix_path = NULL;
  }
  if (ls->tmpdir) {
    rmdir (ls->tmpdir);
    free (ls->tmpdir);
    ls->tmpdir = NULL;
  }
}

/* Percent-encode what a URI path cannot carry as it is. */
static void
uri_escape (const char *s, char *out, size_t len)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;

  for (; *s && o + 4 < len; s++) {
    unsigned char ch = *s;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9') || strchr ("-._~/", ch))
      out[o++] = ch;
    else {
      out[o++] = '%';
      out[o++] = hex[ch >> 4];
      out[o++] = hex[ch & 15];
    }
  }
  out[o] = '\0';
}

void
listeners_uri (const struct listeners *ls, const char *name, char *buf,
               size_t len)
{
  char ename[3 * 4096 + 1];

  const char *s = ls->tls ? "s" : "";
  const char *sock = ls->unix_path ? ls->unix_path : ls->activated_path;

  uri_escape (name, ename, sizeof ename);
  if (sock)
    snprintf (buf, len, "nbd%s+unix:///%s?socket=%s", s, ename, sock);
  else if (!ls->host)           /* nbdkit compat: -s, no listener */
    snprintf (buf, len, "standard input/output");
  else if (strchr (ls->host, ':'))
    snprintf (buf, len, "nbd%s://[%s]:%d/%s", s, ls->host, ls->port, ename);
  else
    snprintf (buf, len, "nbd%s://%s:%d/%s", s, ls->host, ls->port, ename);
}
