/* ublk feature names: every UBLK_F_* bit of the 7.3 UAPI (0-20) has its
 * name, and bits beyond it are shown by number. */
#include <config.h>

#include <string.h>

#include "ubctl.h"
#include "unit.h"

int
main (void)
{
  char buf[512];
  unsigned n = 0;

  ubctl_feature_names ((1ULL << 21) - 1, buf, sizeof buf);
  CHECK (strstr (buf, "bit") == NULL);
  for (const char *p = buf; *p; p++)
    n += *p == '|';
  CHECK (n == 20);              /* 21 names */
  CHECK (strncmp (buf, "ZERO_COPY|", 10) == 0);
  CHECK (strstr (buf, "|AUTO_BUF_REG|") != NULL);
  CHECK (strstr (buf, "|SAFE_STOP_DEV|") != NULL);
  CHECK (strlen (buf) > 13 && strcmp (buf + strlen (buf) - 13, "|IO_DESC_SIZE") == 0);

  ubctl_feature_names (UBLK_F_UPDATE_SIZE | (1ULL << 40), buf, sizeof buf);
  CHECK (strcmp (buf, "UPDATE_SIZE|bit40") == 0);

  ubctl_feature_names (0, buf, sizeof buf);
  CHECK (buf[0] == '\0');
  UNIT_EXIT ();
}
