/* Access control for `ubdkit serve`: --allow and --deny rules, matched by
 * the main thread against each client as it is accepted, before the
 * client sees a byte.  Also holds the rest of the "Access control:"
 * options (-u, -g, --unix-mode, --unix-group), so serve_config embeds one
 * struct.  Errors: parse functions return -1 and a reason, print nothing. */
#ifndef UBDKIT_DAEMON_ACCESS_H
#define UBDKIT_DAEMON_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

enum access_kind {
  ACCESS_ALL,                   /* all, any: every client */
  ACCESS_IPV4, ACCESS_IPV6,     /* address/prefix (TCP clients) */
  ACCESS_UID, ACCESS_GID,       /* SO_PEERCRED (Unix socket clients) */
};

struct access_rule {
  bool allow;                   /* --allow, else --deny */
  enum access_kind kind;
  unsigned prefix;              /* bits of addr that must match */
  unsigned char addr[16];       /* network byte order; IPv4 in addr[0..3] */
  unsigned id;                  /* uid or gid */
  const char *spec;             /* as given (argv), for the log */
};

#define ACCESS_MAX_RULES 64

struct access_config {
  struct access_rule rules[ACCESS_MAX_RULES];
  size_t nr_rules, nr_allow;
  const char *user, *group;     /* -u, -g; NULL: keep our identity */
  uid_t uid;                    /* -u, resolved */
  gid_t gid;                    /* -g, or -u's primary group */
  int unix_mode;                /* --unix-mode, or -1 */
  const char *unix_group;       /* --unix-group */
  gid_t unix_gid;
};

/* What accept_one knows about a client. */
struct access_peer {
  int family;                   /* AF_INET (also mapped IPv6), AF_INET6, AF_UNIX */
  unsigned char addr[16];
  bool has_cred;                /* uid, gid and pid are valid (AF_UNIX) */
  uid_t uid;
  gid_t gid;
  pid_t pid;
};

/* Parse SPEC into r (r->spec points at spec, which must outlive r).
 * Returns 0, or -1 with *why set. */
int access_parse_rule (const char *spec, bool allow, struct access_rule *r,
                       const char **why);
/* A group name or number into *gid (--unix-group).  Returns 0 or -1. */
int access_parse_group (const char *name, gid_t *gid);
/* Fill p from the accepted socket fd and its address (SO_PEERCRED for
 * Unix sockets; an IPv4-mapped IPv6 address becomes IPv4). */
void access_peer_get (int fd, const struct sockaddr_storage *ss,
                      socklen_t len, struct access_peer *p);
/* The rule: an --allow that matches accepts; else a --deny that matches
 * refuses; else the client is accepted only if there is no --allow rule.
 * Returns true to accept.  *rule is the deciding rule, or NULL when none
 * matched. */
bool access_check (const struct access_config *c, const struct access_peer *p,
                   const struct access_rule **rule);
/* Describe p for a log line ("uid 0 gid 0 pid 123" or an address). */
void access_peer_describe (const struct access_peer *p, char *buf, size_t len);

#endif
