/* --allow/--deny: parsing (CIDR edges, mapped IPv4, bad specs), matching
 * of TCP addresses and of Unix peers' credentials, and the allow/deny
 * rule itself. */
#include <config.h>

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access.h"
#include "unit.h"

static struct access_config cfg;

static void
rules (const char *const *allow, const char *const *deny)
{
  const char *why;

  memset (&cfg, 0, sizeof cfg);
  for (; allow && *allow; allow++, cfg.nr_allow++)
    CHECK (access_parse_rule (*allow, true, &cfg.rules[cfg.nr_rules++],
                              &why) == 0);
  for (; deny && *deny; deny++)
    CHECK (access_parse_rule (*deny, false, &cfg.rules[cfg.nr_rules++],
                              &why) == 0);
}

/* Would a TCP client from ADDR be accepted? */
static bool
tcp (const char *addr)
{
  struct sockaddr_storage ss = { 0 };
  struct access_peer p;
  const struct access_rule *r;

  if (strchr (addr, ':')) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &ss;
    s6->sin6_family = AF_INET6;
    CHECK (inet_pton (AF_INET6, addr, &s6->sin6_addr) == 1);
    access_peer_get (-1, &ss, sizeof *s6, &p);
  }
  else {
    struct sockaddr_in *s4 = (struct sockaddr_in *) &ss;
    s4->sin_family = AF_INET;
    CHECK (inet_pton (AF_INET, addr, &s4->sin_addr) == 1);
    access_peer_get (-1, &ss, sizeof *s4, &p);
  }
  return access_check (&cfg, &p, &r);
}

static bool
unix_peer (uid_t uid, gid_t gid)
{
  struct access_peer p = { .family = AF_UNIX, .has_cred = true,
                           .uid = uid, .gid = gid };
  const struct access_rule *r;

  return access_check (&cfg, &p, &r);
}

#define L(...) ((const char *const []) { __VA_ARGS__, NULL })

static void
bad (const char *spec)
{
  struct access_rule r;
  const char *why = NULL;

  if (access_parse_rule (spec, true, &r, &why) != -1)
    fprintf (stderr, "access_parse_rule(%s) accepted a bad spec\n", spec);
  CHECK (access_parse_rule (spec, true, &r, &why) == -1);
  CHECK (why != NULL);
}

int
main (void)
{
  const struct access_rule *r;
  struct access_rule rule;
  const char *why;

  /* No rules: everyone. */
  rules (NULL, NULL);
  CHECK (tcp ("10.1.2.3") && tcp ("::1") && unix_peer (1000, 1000));

  /* Host rules (/32, /128 implied and explicit). */
  rules (L ("127.0.0.2"), L ("all"));
  CHECK (tcp ("127.0.0.2"));
  CHECK (!tcp ("127.0.0.3"));
  CHECK (!tcp ("::1"));
  CHECK (tcp ("::ffff:127.0.0.2"));     /* mapped peer matches IPv4 */
  CHECK (!tcp ("::ffff:127.0.0.3"));
  rules (L ("10.0.0.1/32", "::1/128"), NULL);
  CHECK (tcp ("10.0.0.1") && !tcp ("10.0.0.0") && !tcp ("10.0.0.2"));
  CHECK (tcp ("::1") && !tcp ("::2") && !tcp ("::"));

  /* CIDR: /0, /8, odd lengths, host bits set in the rule. */
  rules (L ("0.0.0.0/0"), NULL);
  CHECK (tcp ("1.2.3.4") && tcp ("255.255.255.255") && !tcp ("::1"));
  rules (L ("::/0"), NULL);
  CHECK (tcp ("::1") && tcp ("fe80::1") && !tcp ("1.2.3.4"));
  rules (L ("10.0.0.0/8"), NULL);
  CHECK (tcp ("10.255.255.255") && tcp ("10.0.0.0") && !tcp ("11.0.0.0") &&
         !tcp ("9.255.255.255"));
  rules (L ("192.168.1.77/25"), NULL);
  CHECK (tcp ("192.168.1.0") && tcp ("192.168.1.127") &&
         !tcp ("192.168.1.128"));
  rules (L ("fe80::/10"), NULL);
  CHECK (tcp ("fe80::1") && tcp ("febf:ffff::1") && !tcp ("fec0::1") &&
         !tcp ("fe7f::1"));
  /* An IPv6 rule in ::ffff:0:0/96 is an IPv4 rule. */
  rules (L ("::ffff:10.0.0.0/104"), NULL);
  CHECK (tcp ("10.9.8.7") && tcp ("::ffff:10.9.8.7") && !tcp ("11.0.0.1"));
  CHECK (access_parse_rule ("::ffff:1.2.3.4", true, &rule, &why) == 0 &&
         rule.kind == ACCESS_IPV4 && rule.prefix == 32);

  /* Only --deny rules: the rest are accepted. */
  rules (NULL, L ("10.0.0.0/8"));
  CHECK (!tcp ("10.1.1.1") && tcp ("11.1.1.1") && tcp ("::1"));
  /* An --allow wins over a --deny, whatever the order. */
  rules (L ("10.1.0.0/16"), L ("10.0.0.0/8"));
  CHECK (tcp ("10.1.2.3") && !tcp ("10.2.0.0") && !tcp ("12.0.0.0"));
  /* The deciding rule is reported. */
  {
    struct access_peer p = { .family = AF_INET, .addr = { 10, 2, 0, 0 } };
    CHECK (!access_check (&cfg, &p, &r) && r && strcmp (r->spec, "10.0.0.0/8") == 0);
    p.addr[0] = 12;
    CHECK (!access_check (&cfg, &p, &r) && r == NULL);
  }

  /* Unix peers: uid and gid rules; IP rules never match them. */
  rules (L ("uid:0"), L ("all"));
  CHECK (unix_peer (0, 5) && !unix_peer (65534, 0));
  rules (NULL, L ("gid:6"));
  CHECK (!unix_peer (0, 6) && unix_peer (6, 0));
  rules (L ("127.0.0.1"), NULL);
  CHECK (!unix_peer (0, 0));
  rules (L ("uid:root"), NULL);
  CHECK (unix_peer (0, 0) && !unix_peer (1, 0));
  {
    /* A real peer: our own credentials through SO_PEERCRED. */
    struct sockaddr_storage ss = { .ss_family = AF_UNIX };
    struct access_peer p;
    int sv[2];
    CHECK (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    access_peer_get (sv[0], &ss, sizeof ss, &p);
    CHECK (p.has_cred && p.uid == getuid () && p.gid == getgid () &&
           p.pid == getpid ());
    close (sv[0]);
    close (sv[1]);
  }

  /* Bad specs. */
  bad ("");
  bad ("foo");
  bad ("10.0.0.0/33");
  bad ("::/129");
  bad ("10.0.0.0/");
  bad ("10.0.0.0/-1");
  bad ("10.0.0.0/8x");
  bad ("10.0.0.0/ 8");
  bad ("/8");
  bad ("10.0.0.256");
  bad ("10.0.0");
  bad ("fe80::1::2");
  bad ("uid:");
  bad ("gid:");
  bad ("uid:-1");
  bad ("uid:no-such-user-here");
  bad ("gid:no-such-group-here");
  bad ("uid:4294967295");
  bad ("ALL");
  CHECK (access_parse_rule ("uid:4294967294", true, &rule, &why) == 0);
  UNIT_EXIT ();
}
