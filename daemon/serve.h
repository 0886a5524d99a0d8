/* `ubdkit serve`: options parsed into one struct, then run. */
#ifndef UBDKIT_DAEMON_SERVE_H
#define UBDKIT_DAEMON_SERVE_H

#include <stdbool.h>
#include <stddef.h>

#include "access.h"
#include "progress.h"
#include "server.h"

struct serve_config {
  const char *unix_path;        /* -U; "-" = private temporary socket */
  const char *port;             /* -p; NULL = none (or default) */
  const char *bind_addr;        /* --bind */
  const char *export_name;      /* -e */
  const char *description;      /* --description */
  bool readonly;                /* -r */
  const char *run;              /* --run */
  bool daemonize;
  const char *pidfile;
  const char *control;          /* --control: stats socket (control.c) */
  struct server_options server;
  struct progress_opts progress;
  const char *backend;          /* BACKEND, or NULL if only -E exports */
  const char **extra;           /* -E 'NAME BACKEND [k=v ...]' */
  size_t nr_extra;
  char **params;                /* key=value ... */
  int nr_params;
  struct access_config access;  /* --allow, --deny, -u, -g, --unix-* */
  bool single;                  /* nbdkit compat: -s, stdin/stdout client */
  /* systemd: no -U/-p/--bind and LISTEN_PID names us (systemd.c). */
  bool socket_activation;
};

/* Parse argv (after "serve").  Returns 0, 1 if --help was printed, or -1
 * after printing a one-line error (exit status 2). */
int serve_parse (int argc, char **argv, struct serve_config *cfg);
void serve_usage (void);
/* Run until stopped.  Returns the process exit status. */
int serve_run (struct serve_config *cfg);

/* listen.c: listening sockets. */
struct listeners {
  int fds[16];
  size_t n;
  char *unix_path;              /* to unlink at exit */
  char *tmpdir;                 /* for -U - */
  int port;                     /* the bound TCP port, or -1 */
  const char *host;             /* for the URI */
  bool tls;                     /* nbds:// */
  /* systemd socket activation: the sockets are systemd's, never unlinked;
   * an activated Unix socket's path (for the URI) or NULL. */
  bool activated;
  char *activated_path;
};
int listeners_open (struct listeners *ls, const struct serve_config *cfg);
void listeners_close (struct listeners *ls);
/* The URI a client uses for export NAME; written into buf. */
void listeners_uri (const struct listeners *ls, const char *name, char *buf,
                    size_t len);

#endif
