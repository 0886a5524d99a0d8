/* Option parsing for `ubdkit serve`. */
#include <config.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ubdkit/backend.h"
#include "serve.h"
#include "systemd.h"
#include "log.h"
#include "logging.h"
#include "size.h"
#include "loop.h"
#include "privs.h"
/* nbdkit compat: */
#include "handshake-mask.h"
#ifdef HAVE_NBDKIT
#include "../plugins/nbdkit/debugflags.h"
#include "../plugins/nbdkit/info.h"
#endif

enum {
  OPT_BIND = 256, OPT_RUN, OPT_DEPTH, OPT_BUFFER_SIZE, OPT_MAX_CONNECTIONS,
  OPT_DAEMONIZE, OPT_IO_FLUSHER, OPT_NO_MLOCK, OPT_OOM_SCORE_ADJ,
  OPT_DESCRIPTION, OPT_WORKERS, OPT_HANDSHAKE_TIMEOUT, OPT_POLL,
  OPT_TLS, OPT_TLS_CERTIFICATES, OPT_TLS_PSK, OPT_TLS_VERIFY_PEER,
  OPT_TLS_ALLOW_DN, OPT_TLS_PRIORITY, OPT_TLS_KTLS,
  /* Access control: */
  OPT_ALLOW, OPT_DENY, OPT_UNIX_MODE, OPT_UNIX_GROUP,
  /* Observability (daemon/control.c): */
  OPT_CONTROL,
  /* Logging: */
  OPT_LOG,
  /* nbdkit compat: informational modes. */
  OPT_DUMP_PLUGIN, OPT_DUMP_CONFIG,
  OPT_MASK_HANDSHAKE,
  OPT_FILTER,                   /* --filter */
};

#define MAX_EXPORTS 64
static const char *extra_exports[MAX_EXPORTS];
#define MAX_ALLOW_DN 64
static const char *allow_dn[MAX_ALLOW_DN];

static const struct option long_options[] = {
  { "unix", required_argument, NULL, 'U' },
  { "port", required_argument, NULL, 'p' },
  { "bind", required_argument, NULL, OPT_BIND },
  { "export", required_argument, NULL, 'e' },
  { "export-spec", required_argument, NULL, 'E' },
  { "description", required_argument, NULL, OPT_DESCRIPTION },
  { "readonly", no_argument, NULL, 'r' },
  { "run", required_argument, NULL, OPT_RUN },
  { "threads", required_argument, NULL, 't' },
  { "depth", required_argument, NULL, OPT_DEPTH },
  { "workers", required_argument, NULL, OPT_WORKERS },
  { "poll", required_argument, NULL, OPT_POLL },
  { "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
  { "buffer-size", required_argument, NULL, OPT_BUFFER_SIZE },
  { "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
  { "daemonize", no_argument, NULL, OPT_DAEMONIZE },
  { "pidfile", required_argument, NULL, 'P' },
  { "io-flusher", required_argument, NULL, OPT_IO_FLUSHER },
  { "no-mlock", no_argument, NULL, OPT_NO_MLOCK },
  { "oom-score-adj", required_argument, NULL, OPT_OOM_SCORE_ADJ },
  { "tls", required_argument, NULL, OPT_TLS },
  { "tls-certificates", required_argument, NULL, OPT_TLS_CERTIFICATES },
  { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
  { "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY_PEER },
  { "tls-allow-dn", required_argument, NULL, OPT_TLS_ALLOW_DN },
  { "tls-priority", required_argument, NULL, OPT_TLS_PRIORITY },
  { "tls-ktls", required_argument, NULL, OPT_TLS_KTLS },
  /* Access control: */
  { "allow", required_argument, NULL, OPT_ALLOW },
  { "deny", required_argument, NULL, OPT_DENY },
  { "user", required_argument, NULL, 'u' },
  { "group", required_argument, NULL, 'g' },
  { "unix-mode", required_argument, NULL, OPT_UNIX_MODE },
  { "unix-group", required_argument, NULL, OPT_UNIX_GROUP },
  /* Observability: */
  { "control", required_argument, NULL, OPT_CONTROL },
  /* Logging: */
  { "log", required_argument, NULL, OPT_LOG },
  { "filter", required_argument, NULL, OPT_FILTER }, /* --filter */
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  /* nbdkit compat: */
  { "debug", required_argument, NULL, 'D' },
  { "dump-plugin", no_argument, NULL, OPT_DUMP_PLUGIN },
  { "dump-config", no_argument, NULL, OPT_DUMP_CONFIG },
  { "version", no_argument, NULL, 'V' },
  { "single", no_argument, NULL, 's' },
  { "mask-handshake", required_argument, NULL, OPT_MASK_HANDSHAKE },
  { NULL, 0, NULL, 0 },
};

void
serve_usage (void)
{
  printf (
"Usage: ubdkit serve [OPTIONS] [BACKEND [KEY=VALUE ...]]\n"
"Serve BACKEND over NBD (TCP and/or Unix socket).  Without a BACKEND,\n"
"serve a 1 GiB memory disk (memory size=1G).\n"
"\n"
"Listening:\n"
"  -U, --unix PATH          Unix socket (- for a private temporary one)\n"
"  -p, --port PORT          TCP port (default 10809 when no -U; 0 = any)\n"
"      --bind ADDR          TCP address to listen on (default: all)\n"
"  -e, --export NAME        export name (default \"\")\n"
"  -E, --export-spec 'NAME BACKEND [KEY=VALUE ...]'\n"
"                           one more export (repeatable); its own keys\n"
"                           description=TEXT and readonly=BOOL; the first\n"
"                           export is the default one\n"
"      --description TEXT   export description\n"
"  -r, --readonly           refuse writes\n"
"      --filter NAME        an nbdkit filter over BACKEND (repeatable; the\n"
"                           first is outermost); NAME or a path to a .so\n"
"      --max-connections N  at most N clients at once (default 512)\n"
"      --handshake-timeout S  close clients that have not chosen an export\n"
"                           within S seconds (default 30)\n"
"\n"
"TLS (docs/tls.md):\n"
"      --tls off|on|require  offer TLS (on), or serve TLS clients only\n"
"                           (require); default off\n"
"      --tls-certificates DIR  X.509: ca-cert.pem, server-cert.pem,\n"
"                           server-key.pem, optional ca-crl.pem\n"
"      --tls-psk FILE       pre-shared keys (psktool's format)\n"
"      --tls-verify-peer    clients must show a certificate of the CA\n"
"      --tls-allow-dn DN    only clients whose certificate has this subject\n"
"                           DN (repeatable; implies --tls-verify-peer)\n"
"      --tls-priority STR   GnuTLS priority string\n"
"      --tls-ktls auto|off  kernel TLS where it can be used (default auto)\n"
"\n"
"Process:\n"
"      --run 'CMD'          run CMD with $uri, $unixsocket, $port, $exportname\n"
"                           set; serve until it exits and exit with its status\n"
"      --daemonize          go to the background once serving\n"
"  -P, --pidfile FILE       write the server's pid to FILE\n"
"      --control PATH       answer `ubdkit stats PATH` on this Unix socket\n"
"  -v, --verbose            debug output (twice: per-request debug too)\n"
LOGGING_USAGE
/* nbdkit compat: */
"  -D, --debug PLUGIN.FLAG=N  set an nbdkit plugin's debug flag (its\n"
"                           variable PLUGIN_debug_FLAG, '.' as '_')\n"
"\n"
"Information (nothing is served):\n"
"  -V, --version            ubdkit's version; with nbdkit:PLUGIN, the\n"
"                           plugin's too (and --help shows its help)\n"
"      --dump-plugin        nbdkit:PLUGIN's callbacks and settings as\n"
"                           nbdkit --dump-plugin prints them (key=value)\n"
"      --dump-config        ubdkit's build settings as key=value lines\n"
"\n"
"Single client (nbdkit's -s):\n"
"  -s, --single             serve one client on standard input/output (a\n"
"                           socket: libnbd's nbd_connect_command); no\n"
"                           listener; exit when it disconnects\n"
"      --mask-handshake N   offer only these global handshake flags (bit 0\n"
"                           fixed newstyle, bit 1 no zeroes; default 3)\n"
"\n"
"Performance and memory (all memory is reserved at start):\n"
"  -t, --threads N          event loop threads (default: one per core)\n"
"      --depth N            request slots per thread (default 32)\n"
"      --buffer-size SIZE   data buffer per slot (default 1M); larger\n"
"                           requests are streamed through it\n"
"      --workers N          threads for backends that block (default 8)\n"
"      --poll USEC          poll for up to USEC before sleeping, adapting to\n"
"                           the load (default %u; 0: never poll)\n"
"\n"
"Forward progress under memory pressure:\n"
"      --io-flusher on|off|require  PR_SET_IO_FLUSHER (default on: warn if\n"
"                           refused; require: refuse to start without it)\n"
"      --no-mlock           do not lock memory\n"
"      --oom-score-adj N|off  OOM score adjustment (default -1000)\n"
"\n"
"Access control:\n"
"      --allow SPEC         accept clients matching SPEC (repeatable)\n"
"      --deny SPEC          refuse clients matching SPEC (repeatable)\n"
"                           SPEC: ADDR or ADDR/PREFIX (IPv4 or IPv6; a mapped\n"
"                           ::ffff:a.b.c.d client is IPv4), all or any, and\n"
"                           for Unix sockets uid:ID and gid:ID (numbers or\n"
"                           names; the client's primary group).  A client\n"
"                           matching an --allow is accepted; else one matching\n"
"                           a --deny is refused; else it is accepted only if\n"
"                           there is no --allow.  Refused: closed at once\n"
"  -u, --user USER          run as USER once set up (its group unless -g)\n"
"  -g, --group GROUP        run as GROUP once set up (no other groups)\n"
"      --unix-mode MODE     permissions of the -U socket (octal, e.g. 0660)\n"
"      --unix-group GROUP   group of the -U socket\n"
"\n"
"Backends:\n", LOOP_POLL_DEFAULT_US);
  backend_print_list ();
}

static int
bad (const char *what, const char *arg)
{
  fprintf (stderr, "ubdkit serve: invalid %s: '%s'\n", what, arg);
  return -1;
}

static int
parse_uint (const char *arg, const char *what, uint64_t min, uint64_t max,
            unsigned *out)
{
  uint64_t v;

  if (size_parse_uint (arg, min, max, &v) == -1)
    return bad (what, arg);
  *out = v;
  return 0;
}

/* --allow, --deny: one rule more. */
static int
access_add_option (struct access_config *a, bool allow, const char *arg)
{
  const char *why;
  char what[128];

  if (a->nr_rules == ACCESS_MAX_RULES)
    return bad (allow ? "--allow (too many rules)" : "--deny (too many rules)",
                arg);
  if (access_parse_rule (arg, allow, &a->rules[a->nr_rules], &why) == -1) {
    snprintf (what, sizeof what, "%s (%s)", allow ? "--allow" : "--deny", why);
    return bad (what, arg);
  }
  a->nr_rules++;
  a->nr_allow += allow;
  return 0;
}

static int
parse_one (int c, const char *arg, struct serve_config *cfg)
{
  uint64_t v;
  const char *why;
  char *end;

  switch (c) {
  case 'U': cfg->unix_path = arg; return 0;
  case 'p': return parse_uint (arg, "port", 0, 65535, &(unsigned) { 0 }) == -1
              ? -1 : (cfg->port = arg, 0);
  case OPT_BIND: cfg->bind_addr = arg; return 0;
  case 'e': cfg->export_name = arg; return 0;
  case 'E':
    if (cfg->nr_extra == MAX_EXPORTS)
      return bad ("-E (too many exports)", arg);
    extra_exports[cfg->nr_extra++] = arg;
    return 0;
  case OPT_DESCRIPTION: cfg->description = arg; return 0;
  case 'r': cfg->readonly = true; return 0;
  case OPT_RUN: cfg->run = arg; return 0;
  case 't': return parse_uint (arg, "--threads", 1, 256, &cfg->server.threads);
  case OPT_DEPTH: return parse_uint (arg, "--depth", 1, 65536, &cfg->server.depth);
  case OPT_HANDSHAKE_TIMEOUT:
    return parse_uint (arg, "--handshake-timeout", 1, 3600,
                       &cfg->server.handshake_timeout);
  case OPT_POLL:
    return parse_uint (arg, "--poll (microseconds, 0 to 10000)", 0, 10000,
                       &cfg->server.poll_us);
  case OPT_WORKERS:
    return parse_uint (arg, "--workers", 1, 1024, &cfg->server.workers);
  case OPT_MAX_CONNECTIONS:
    return parse_uint (arg, "--max-connections", 1, 1 << 20,
                       &cfg->server.max_connections);
  case OPT_BUFFER_SIZE:
    if (size_parse (arg, &v, &why) == -1 || v < 4096 || v > (64u << 20) ||
        v % 4096)
      return bad ("--buffer-size (4k to 64M, a multiple of 4k)", arg);
    cfg->server.buf_size = v;
    return 0;
  case OPT_DAEMONIZE: cfg->daemonize = true; return 0;
  case 'P': cfg->pidfile = arg; return 0;
  case OPT_IO_FLUSHER:
    return progress_parse_io_flusher (arg, &cfg->progress.io_flusher) == -1
      ? bad ("--io-flusher (on, off or require)", arg) : 0;
  case OPT_NO_MLOCK: cfg->progress.mlock = false; return 0;
  case OPT_OOM_SCORE_ADJ:
    return progress_parse_oom_score_adj (arg, &cfg->progress) == -1
      ? bad ("--oom-score-adj (-1000 to 1000, or off)", arg) : 0;
  case OPT_TLS:
    if (strcmp (arg, "off") == 0)
      cfg->server.tls.mode = TLS_OFF;
    else if (strcmp (arg, "on") == 0)
      cfg->server.tls.mode = TLS_ON;
    else if (strcmp (arg, "require") == 0)
      cfg->server.tls.mode = TLS_REQUIRE;
    else
      return bad ("--tls (off, on or require)", arg);
    return 0;
  case OPT_TLS_CERTIFICATES: cfg->server.tls.certificates = arg; return 0;
  case OPT_TLS_PSK: cfg->server.tls.psk = arg; return 0;
  case OPT_TLS_VERIFY_PEER: cfg->server.tls.verify_peer = true; return 0;
  case OPT_TLS_ALLOW_DN:
    if (cfg->server.tls.nr_allow_dn == MAX_ALLOW_DN)
      return bad ("--tls-allow-dn (too many)", arg);
    allow_dn[cfg->server.tls.nr_allow_dn++] = arg;
    cfg->server.tls.verify_peer = true;
    return 0;
  case OPT_TLS_PRIORITY: cfg->server.tls.priority = arg; return 0;
  case OPT_TLS_KTLS:
    if (strcmp (arg, "auto") && strcmp (arg, "off"))
      return bad ("--tls-ktls (auto or off)", arg);
    cfg->server.tls.ktls = strcmp (arg, "auto") == 0;
    return 0;
  case OPT_ALLOW: case OPT_DENY:
    return access_add_option (&cfg->access, c == OPT_ALLOW, arg);
  case 'u': cfg->access.user = arg; return 0;
  case 'g': cfg->access.group = arg; return 0;
  case OPT_UNIX_MODE:
    if (*arg < '0' || *arg > '7' || (v = strtoul (arg, &end, 8), *end) ||
        v > 07777)
      return bad ("--unix-mode (octal, such as 0660)", arg);
    cfg->access.unix_mode = v;
    return 0;
  case OPT_UNIX_GROUP:
    cfg->access.unix_group = arg;
    return access_parse_group (arg, &cfg->access.unix_gid) == -1
      ? bad ("--unix-group (no such group)", arg) : 0;
  case OPT_CONTROL: cfg->control = arg; return 0;
  case 'v':
    log_more_verbose ();
    return 0;
  /* Logging: */
  case OPT_LOG:
    return logging_option ("serve", arg);
  /* nbdkit compat: */
  case 's': cfg->single = true; return 0;
  case OPT_MASK_HANDSHAKE:
    if (size_parse_uint (arg, 0, UINT32_MAX, &v) == -1)
      return bad ("--mask-handshake (a number, bits 0 and 1)", arg);
    nbd_handshake_mask (v);
    return 0;
  case 'D':
#ifdef HAVE_NBDKIT
    return plughost_debug_flag_option (arg);
#else
    return bad ("-D (ubdkit was built without nbdkit plugins)", arg);
#endif
  case OPT_FILTER:              /* --filter */
#ifdef HAVE_NBDKIT
    filter_chain_add (arg);
    return 0;
#else
    return bad ("--filter (ubdkit was built without nbdkit)", arg);
#endif
  default:
    return -1;
  }
}

/* nbdkit compat: the informational modes, asked with BACKEND (NULL if
 * none given).  Returns 1 (done: exit 0) or -1 (exit 2). */
enum info_mode { INFO_NONE, INFO_HELP, INFO_VERSION, INFO_DUMP_PLUGIN,
                 INFO_DUMP_CONFIG };

static int
serve_info (enum info_mode mode, const char *backend)
{
  const char *plugin = backend && strncmp (backend, "nbdkit:", 7) == 0
    ? backend + 7 : NULL;

  switch (mode) {
  case INFO_HELP:
    serve_usage ();
    if (!plugin)
      return 1;
    printf ("\n");
    fflush (stdout);
    break;
  case INFO_VERSION:
    printf ("ubdkit %s\n", PACKAGE_VERSION);
    fflush (stdout);
    if (!plugin)
      return 1;
    break;
  case INFO_DUMP_CONFIG:
    printf ("name=ubdkit\nversion=%s\n", PACKAGE_VERSION);
    printf ("version_major=%d\nversion_minor=%d\n",
            atoi (PACKAGE_VERSION), strchr (PACKAGE_VERSION, '.')
            ? atoi (strchr (PACKAGE_VERSION, '.') + 1) : 0);
#ifdef HAVE_NBDKIT
    printf ("nbdkit_plugins=yes\nplugindir=%s\n", NBDKIT_PLUGINDIR);
#else
    printf ("nbdkit_plugins=no\n");
#endif
    printf ("tls=yes\n");        /* GnuTLS is always built in */
    return 1;
  case INFO_DUMP_PLUGIN:
    if (!plugin) {
      fprintf (stderr, "ubdkit serve: --dump-plugin needs nbdkit:PLUGIN\n");
      return -1;
    }
    break;
  default:
    return -1;
  }
#ifdef HAVE_NBDKIT
  if ((mode == INFO_HELP ? plughost_print_help (plugin)
       : mode == INFO_VERSION ? plughost_print_version (plugin)
       : plughost_dump_plugin (plugin)) == -1)
    return -1;
  return 1;
#else
  fprintf (stderr, "ubdkit serve: ubdkit was built without nbdkit plugins\n");
  return -1;
#endif
}

int
serve_parse (int argc, char **argv, struct serve_config *cfg)
{
  enum info_mode info = INFO_NONE;      /* nbdkit compat */
  int c;

  memset (cfg, 0, sizeof *cfg);
  cfg->export_name = "";
  cfg->server.threads = sysconf (_SC_NPROCESSORS_ONLN) > 0
    ? sysconf (_SC_NPROCESSORS_ONLN) : 1;
  cfg->server.depth = 32;
  cfg->server.buf_size = 1024 * 1024;
  cfg->server.max_connections = 512;
  cfg->server.workers = 8;
  cfg->server.handshake_timeout = 30;
  cfg->server.poll_us = LOOP_POLL_DEFAULT_US;
  cfg->server.tls.ktls = true;
  cfg->server.tls.allow_dn = allow_dn;
  cfg->progress = progress_defaults;
  cfg->access.unix_mode = -1;
  optind = 1;
  opterr = 0;
  /* Options may also follow BACKEND and its key=value arguments, as with
   * nbdkit: getopt moves the non-options to the end. */
  cfg->extra = extra_exports;
  while ((c = getopt_long (argc, argv, "U:p:e:E:rt:P:u:g:vhD:Vs", long_options,
                           NULL)) != -1) {
    /* nbdkit compat: informational modes, after the whole command line
     * (nbdkit PLUGIN --help names the plugin before the option). */
    if (c == 'h' || c == 'V' || c == OPT_DUMP_PLUGIN || c == OPT_DUMP_CONFIG) {
      if (info == INFO_NONE)
        info = c == 'h' ? INFO_HELP : c == 'V' ? INFO_VERSION
          : c == OPT_DUMP_PLUGIN ? INFO_DUMP_PLUGIN : INFO_DUMP_CONFIG;
      continue;
    }
    if (c == '?' || c == ':') {
      fprintf (stderr, "ubdkit serve: %s option '%s' (see 'ubdkit serve --help')\n",
               optopt && c == ':' ? "missing argument for" : "unknown",
               argv[optind - 1]);
      return -1;
    }
    if (parse_one (c, optarg, cfg) == -1)
      return -1;
  }
  if (info != INFO_NONE)        /* nbdkit compat */
    return serve_info (info, optind < argc ? argv[optind] : NULL);
  if (optind >= argc && cfg->nr_extra > 0)
    cfg->backend = NULL;        /* only -E exports */
  else if (optind >= argc) {
    /* The embedded default: a 1 GiB RAM disk, for trying ubdkit out. */
    static char *default_params[] = { (char *) "size=1G", NULL };
    cfg->backend = "memory";
    cfg->params = default_params;
    cfg->nr_params = 1;
  }
  else {
    cfg->backend = argv[optind];
    cfg->params = &argv[optind + 1];
    cfg->nr_params = argc - optind - 1;
  }
  /* nbdkit compat: -s has its one client and no listener. */
  if (cfg->single && (cfg->unix_path || cfg->port || cfg->bind_addr ||
                      cfg->run || cfg->daemonize)) {
    fprintf (stderr, "ubdkit serve: -s (the client on standard input/output) "
             "does not go with -U, -p, --bind, --run or --daemonize\n");
    return -1;
  }
  if (cfg->single)
    ;
  /* systemd socket activation (systemd.h) replaces the default port. */
  else if (!cfg->unix_path && !cfg->port && !cfg->bind_addr &&
      systemd_listen_fds_for_us ())
    cfg->socket_activation = true;
  if (!cfg->unix_path && !cfg->port && !cfg->socket_activation &&
      !cfg->single)
    cfg->port = "10809";
  if (strlen (cfg->export_name) > 4096 ||
      (cfg->description && strlen (cfg->description) > 4096)) {
    fprintf (stderr, "ubdkit serve: export name and description are limited to 4096 bytes\n");
    return -1;
  }
  if (cfg->server.tls.mode == TLS_OFF &&
      (cfg->server.tls.certificates || cfg->server.tls.psk ||
       cfg->server.tls.verify_peer)) {
    fprintf (stderr, "ubdkit serve: TLS options without --tls=on or "
             "--tls=require\n");
    return -1;
  }
  if (privs_resolve (&cfg->access) == -1)
    return -1;
  if ((cfg->access.unix_mode >= 0 || cfg->access.unix_group) &&
      !cfg->unix_path) {
    fprintf (stderr, "ubdkit serve: --unix-mode and --unix-group need -U\n");
    return -1;
  }
  if (cfg->daemonize && cfg->run) {
    fprintf (stderr, "ubdkit serve: --daemonize and --run do not go together\n");
    return -1;
  }
  return 0;
}
