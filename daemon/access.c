/* --allow and --deny, as nbdkit's ip filter has them.  See access.h for
 * the rule and docs/access-control.md for the user's view.
 *
 * Rules are parsed once at start-up into binary form, so the check that
 * runs for every accepted client is a few memcmp's: no allocation, no
 * name lookups (user and group names are resolved when parsed). */
#include <config.h>

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"

/* A decimal number without sign, spaces or overflow past max. */
static int
parse_num (const char *s, unsigned long max, unsigned long *out)
{
  char *end;

  if (*s < '0' || *s > '9')
    return -1;
  *out = strtoul (s, &end, 10);
  return *end || *out > max ? -1 : 0;
}

static int
parse_id (const char *s, bool user, unsigned *id, const char **why)
{
  unsigned long n;

  if (*s == '\0') {
    *why = user ? "uid: needs a number or a user name"
      : "gid: needs a number or a group name";
    return -1;
  }
  if (parse_num (s, 0xfffffffeUL, &n) == 0)
    *id = n;
  else if (user) {
    struct passwd *pw = getpwnam (s);
    if (!pw) {
      *why = "no such user";
      return -1;
    }
    *id = pw->pw_uid;
  }
  else {
    struct group *gr = getgrnam (s);
    if (!gr) {
      *why = "no such group";
      return -1;
    }
    *id = gr->gr_gid;
  }
  return 0;
}

int
access_parse_group (const char *name, gid_t *gid)
{
  const char *why;
  unsigned id;

  if (parse_id (name, false, &id, &why) == -1)
    return -1;
  *gid = id;
  return 0;
}

/* An IPv6 rule inside ::ffff:0:0/96 is an IPv4 rule: mapped peers are
 * compared as IPv4, so such a rule must be too or it would never match. */
static void
unmap_rule (struct access_rule *r)
{
  static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };

  if (r->kind == ACCESS_IPV6 && r->prefix >= 96 &&
      memcmp (r->addr, mapped, 12) == 0) {
    memmove (r->addr, r->addr + 12, 4);
    memset (r->addr + 4, 0, 12);
    r->kind = ACCESS_IPV4;
    r->prefix -= 96;
  }
}

int
access_parse_rule (const char *spec, bool allow, struct access_rule *r,
                   const char **why)
{
  char addr[INET6_ADDRSTRLEN];
  const char *slash;
  unsigned long prefix;
  size_t n;

  memset (r, 0, sizeof *r);
  r->allow = allow;
  r->spec = spec;
  if (strcmp (spec, "all") == 0 || strcmp (spec, "any") == 0) {
    r->kind = ACCESS_ALL;
    return 0;
  }
  if (strncmp (spec, "uid:", 4) == 0) {
    r->kind = ACCESS_UID;
    return parse_id (spec + 4, true, &r->id, why);
  }
  if (strncmp (spec, "gid:", 4) == 0) {
    r->kind = ACCESS_GID;
    return parse_id (spec + 4, false, &r->id, why);
  }
  slash = strchr (spec, '/');
  n = slash ? (size_t) (slash - spec) : strlen (spec);
  if (n == 0 || n >= sizeof addr) {
    *why = "expected an address, ADDR/PREFIX, all, uid:ID or gid:ID";
    return -1;
  }
  memcpy (addr, spec, n);
  addr[n] = '\0';
  if (inet_pton (AF_INET, addr, r->addr) == 1)
    r->kind = ACCESS_IPV4;
  else if (inet_pton (AF_INET6, addr, r->addr) == 1)
    r->kind = ACCESS_IPV6;
  else {
    *why = "expected an address, ADDR/PREFIX, all, uid:ID or gid:ID";
    return -1;
  }
  r->prefix = r->kind == ACCESS_IPV4 ? 32 : 128;
  if (slash) {
    if (parse_num (slash + 1, r->prefix, &prefix) == -1 ||
        strlen (slash + 1) > 3) {
      *why = r->kind == ACCESS_IPV4 ? "the prefix length must be 0 to 32"
        : "the prefix length must be 0 to 128";
      return -1;
    }
    r->prefix = prefix;
  }
  unmap_rule (r);
  return 0;
}

void
access_peer_get (int fd, const struct sockaddr_storage *ss, socklen_t len,
                 struct access_peer *p)
{
  static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };

  memset (p, 0, sizeof *p);
  p->family = ss->ss_family;
  if (ss->ss_family == AF_INET && len >= sizeof (struct sockaddr_in))
    memcpy (p->addr, &((const struct sockaddr_in *) ss)->sin_addr, 4);
  else if (ss->ss_family == AF_INET6 && len >= sizeof (struct sockaddr_in6)) {
    const unsigned char *a =
      ((const struct sockaddr_in6 *) ss)->sin6_addr.s6_addr;
    if (memcmp (a, mapped, 12) == 0) {
      p->family = AF_INET;
      memcpy (p->addr, a + 12, 4);
    }
    else
      memcpy (p->addr, a, 16);
  }
  else if (ss->ss_family == AF_UNIX) {
    struct ucred cred;
    socklen_t clen = sizeof cred;
    if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
      p->has_cred = true;
      p->uid = cred.uid;
      p->gid = cred.gid;
      p->pid = cred.pid;
    }
  }
}

static bool
prefix_match (const unsigned char *a, const unsigned char *b, unsigned bits)
{
  unsigned bytes = bits / 8, rest = bits % 8;
  unsigned char mask = 0xff << (8 - rest);

  if (memcmp (a, b, bytes) != 0)
    return false;
  return rest == 0 || ((a[bytes] ^ b[bytes]) & mask) == 0;
}

static bool
rule_matches (const struct access_rule *r, const struct access_peer *p)
{
  switch (r->kind) {
  case ACCESS_ALL: return true;
  case ACCESS_IPV4:
    return p->family == AF_INET && prefix_match (r->addr, p->addr, r->prefix);
  case ACCESS_IPV6:
    return p->family == AF_INET6 && prefix_match (r->addr, p->addr, r->prefix);
  case ACCESS_UID: return p->has_cred && p->uid == r->id;
  case ACCESS_GID: return p->has_cred && p->gid == r->id;
  }
  return false;
}

bool
access_check (const struct access_config *c, const struct access_peer *p,
              const struct access_rule **rule)
{
  const struct access_rule *deny = NULL;

  *rule = NULL;
  for (size_t i = 0; i < c->nr_rules; i++)
    if (rule_matches (&c->rules[i], p)) {
      if (c->rules[i].allow) {
        *rule = &c->rules[i];
        return true;
      }
      if (!deny)
        deny = &c->rules[i];
    }
  *rule = deny;
  return !deny && c->nr_allow == 0;
}

void
access_peer_describe (const struct access_peer *p, char *buf, size_t len)
{
  char host[INET6_ADDRSTRLEN] = "?";

  if (p->family == AF_UNIX) {
    if (p->has_cred)
      snprintf (buf, len, "uid %u gid %u pid %d", (unsigned) p->uid,
                (unsigned) p->gid, (int) p->pid);
    else
      snprintf (buf, len, "unknown credentials");
    return;
  }
  inet_ntop (p->family, p->addr, host, sizeof host);
  snprintf (buf, len, "%s", host);
}
