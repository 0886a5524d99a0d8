/* A NOTIFY_SOCKET for the VM tests (the guest has no python): bind a
 * datagram socket at PATH, create OUT.bound, then append each datagram
 * received to OUT as one line, its lines joined by " | ".  Runs until
 * killed.  Usage: notify-listen PATH OUT */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int
main (int argc, char **argv)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  char msg[4096], bound[4096];
  FILE *out;
  int fd;

  if (argc != 3 || strlen (argv[1]) >= sizeof sun.sun_path) {
    fprintf (stderr, "usage: notify-listen PATH OUT\n");
    return 2;
  }
  strcpy (sun.sun_path, argv[1]);
  unlink (argv[1]);
  fd = socket (AF_UNIX, SOCK_DGRAM, 0);
  out = fopen (argv[2], "a");
  if (fd == -1 || !out || bind (fd, (struct sockaddr *) &sun, sizeof sun) == -1) {
    perror ("notify-listen");
    return 1;
  }
  snprintf (bound, sizeof bound, "%s.bound", argv[2]);
  close (open (bound, O_WRONLY | O_CREAT, 0644));
  for (;;) {
    ssize_t n = recv (fd, msg, sizeof msg - 1, 0);
    if (n <= 0)
      continue;
    msg[n] = '\0';
    for (char *s = msg; *s; s++) {
      if (*s == '\n')
        fputs (s[1] ? " | " : "", out);
      else
        fputc (*s, out);
    }
    fputc ('\n', out);
    fflush (out);
  }
}
