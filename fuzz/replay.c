/* Replay NBD client sessions through the fuzz target, without libFuzzer:
 * the unit test tests/unit-nbd-replay runs every file of fuzz/corpus
 * (valid and invalid sessions) and fuzz/regressions (what the fuzzer once
 * found) in every build, so sanitizer and valgrind runs cover them too.
 *
 * usage: unit-nbd-replay [FILE|DIR ...]
 * Without arguments: $srcdir/../fuzz/corpus and $srcdir/../fuzz/regressions
 * ($srcdir is the tests directory, as make check sets it).
 */
#include <config.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
void fuzz_nbd_stop (void);

static unsigned replayed;

static int
replay_file (const char *path)
{
  FILE *f = fopen (path, "rb");
  static uint8_t buf[1 << 20];
  size_t n;

  if (!f) {
    perror (path);
    return -1;
  }
  n = fread (buf, 1, sizeof buf, f);
  fclose (f);
  LLVMFuzzerTestOneInput (buf, n);
  replayed++;
  return 0;
}

static int
replay_path (const char *path)
{
  struct dirent **names;
  struct stat st;
  int n, r = 0;

  if (stat (path, &st) == -1) {
    perror (path);
    return -1;
  }
  if (!S_ISDIR (st.st_mode))
    return replay_file (path);
  /* Sorted, so a failure is reproducible. */
  n = scandir (path, &names, NULL, alphasort);
  if (n == -1) {
    perror (path);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    char file[4096];
    if (names[i]->d_name[0] != '.') {
      snprintf (file, sizeof file, "%s/%s", path, names[i]->d_name);
      if (replay_file (file) == -1)
        r = -1;
    }
    free (names[i]);
  }
  free (names);
  return r;
}

int
main (int argc, char **argv)
{
  const char *srcdir = getenv ("srcdir");
  char corpus[4096], regressions[4096];
  int r = 0;

  LLVMFuzzerInitialize (&argc, &argv);
  if (argc > 1) {
    for (int i = 1; i < argc; i++)
      if (replay_path (argv[i]) == -1)
        r = -1;
  }
  else {
    snprintf (corpus, sizeof corpus, "%s/../fuzz/corpus",
              srcdir ? srcdir : "tests");
    snprintf (regressions, sizeof regressions, "%s/../fuzz/regressions",
              srcdir ? srcdir : "tests");
    if (replay_path (corpus) == -1 || replay_path (regressions) == -1)
      r = -1;
  }
  fuzz_nbd_stop ();
  printf ("%u sessions replayed\n", replayed);
  if (replayed == 0)
    r = -1;
  return r == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
