/* alloc-counter.so: an LD_PRELOAD library that counts memory allocations,
 * used by test-nbd-no-alloc.sh to prove that the I/O path never allocates.
 *
 *   UBDKIT_ALLOC_LOG=FILE  where SIGUSR1 appends one line of counters:
 *                          "seq=N malloc=N calloc=N ... pthread_create=N"
 *   UBDKIT_ALLOC_TRACE=N   after the first SIGUSR1, also append the call
 *                          stacks of the first N allocations (lines that
 *                          start with "trace"), to say where they are.
 *
 * Counted entry points: the malloc family (malloc, calloc, realloc,
 * reallocarray, posix_memalign, aligned_alloc, memalign, valloc, pvalloc,
 * free of a non-NULL pointer), mmap/mmap64 (anonymous and file mappings
 * separately), mremap, munmap, brk/sbrk and pthread_create (a thread stack).
 * glibc's strdup, asprintf, fopen and friends call malloc through the PLT,
 * so they show up as malloc.  Mappings glibc makes internally (__mmap:
 * malloc's own arenas, thread stacks) and liburing's raw-syscall mmaps are
 * not interposable; the test checks RSS for those.
 *
 * Without UBDKIT_ALLOC_LOG the library counts but installs no handler.
 * Async-signal safety: the handler only reads atomics, formats into a stack
 * buffer and write(2)s.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

enum {
  C_MALLOC, C_CALLOC, C_REALLOC, C_REALLOCARRAY, C_POSIX_MEMALIGN,
  C_ALIGNED_ALLOC, C_MEMALIGN, C_VALLOC, C_PVALLOC, C_FREE,
  C_MMAP_ANON, C_MMAP_FILE, C_MREMAP, C_MUNMAP, C_BRK, C_SBRK,
  C_PTHREAD_CREATE, NR_COUNTERS,
};
static const char *const names[NR_COUNTERS] = {
  "malloc", "calloc", "realloc", "reallocarray", "posix_memalign",
  "aligned_alloc", "memalign", "valloc", "pvalloc", "free",
  "mmap_anon", "mmap_file", "mremap", "munmap", "brk", "sbrk",
  "pthread_create",
};
static uint64_t counters[NR_COUNTERS];

static int log_fd = -1;
static uint64_t seq;
static bool armed;              /* first snapshot taken: tracing may start */
static long trace_left;         /* call stacks still to record */
static volatile int trace_lock;
/* Initial-exec TLS: touching it never allocates. */
static __thread int in_hook __attribute__ ((tls_model ("initial-exec")));

/* The real functions, found with dlsym(RTLD_NEXT). */
static void *(*real_malloc) (size_t);
static void *(*real_calloc) (size_t, size_t);
static void *(*real_realloc) (void *, size_t);
static void *(*real_reallocarray) (void *, size_t, size_t);
static int (*real_posix_memalign) (void **, size_t, size_t);
static void *(*real_aligned_alloc) (size_t, size_t);
static void *(*real_memalign) (size_t, size_t);
static void *(*real_valloc) (size_t);
static void *(*real_pvalloc) (size_t);
static void (*real_free) (void *);
static void *(*real_mmap) (void *, size_t, int, int, int, off_t);
static void *(*real_mremap) (void *, size_t, size_t, int, ...);
static int (*real_munmap) (void *, size_t);
static int (*real_brk) (void *);
static void *(*real_sbrk) (intptr_t);
static int (*real_pthread_create) (pthread_t *, const pthread_attr_t *,
                                   void *(*) (void *), void *);

/* dlsym may allocate (dlerror state) before real_calloc is known: those
 * requests are served from here and never freed. */
static char boot_buf[65536] __attribute__ ((aligned (64)));
static size_t boot_used;
static __thread int resolving __attribute__ ((tls_model ("initial-exec")));

static void *
boot_alloc (size_t n)
{
  void *p;

  n = (n + 63) & ~(size_t) 63;
  if (n > sizeof boot_buf - boot_used)
    return NULL;
  p = boot_buf + boot_used;
  boot_used += n;
  return p;
}

static bool
is_boot (const void *p)
{
  return (const char *) p >= boot_buf &&
         (const char *) p < boot_buf + sizeof boot_buf;
}

#define RESOLVE(name) \
  (real_##name = (__typeof__ (real_##name)) dlsym (RTLD_NEXT, #name))

static void
resolve (void)
{
  if (real_free || resolving)
    return;
  resolving = 1;
  RESOLVE (malloc);
  RESOLVE (calloc);
  RESOLVE (realloc);
  RESOLVE (reallocarray);
  RESOLVE (posix_memalign);
  RESOLVE (aligned_alloc);
  RESOLVE (memalign);
  RESOLVE (valloc);
  RESOLVE (pvalloc);
  RESOLVE (mmap);
  RESOLVE (mremap);
  RESOLVE (munmap);
  RESOLVE (brk);
  RESOLVE (sbrk);
  RESOLVE (pthread_create);
  RESOLVE (free);               /* last: it marks resolution complete */
  resolving = 0;
}

/* Formatting without malloc (and without stdio, which is not
 * async-signal-safe). */
static size_t
put_str (char *buf, size_t pos, size_t len, const char *s)
{
  while (*s && pos < len)
    buf[pos++] = *s++;
  return pos;
}

static size_t
put_u64 (char *buf, size_t pos, size_t len, uint64_t v)
{
  char tmp[24];
  int n = 0;

  do {
    tmp[n++] = '0' + v % 10;
    v /= 10;
  } while (v);
  while (n > 0 && pos < len)
    buf[pos++] = tmp[--n];
  return pos;
}

static void
write_all (const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t r = write (log_fd, buf, len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return;
    buf += r;
    len -= r;
  }
}

/* Record where an allocation came from: one "trace" header line and the
 * backtrace from the hooked function outwards, written straight to the log with backtrace_symbols_fd (which,
 * unlike backtrace_symbols, does not allocate). */
static __attribute__ ((noinline)) void
trace (int what, uint64_t arg)
{
  void *frames[32];
  char line[128], comm[17] = "";
  size_t n = 0;
  int nf;

  if (!__atomic_load_n (&armed, __ATOMIC_ACQUIRE) || log_fd < 0 ||
      __atomic_load_n (&trace_left, __ATOMIC_RELAXED) <= 0)
    return;
  if (__atomic_sub_fetch (&trace_left, 1, __ATOMIC_RELAXED) < 0)
    return;
  prctl (PR_GET_NAME, comm);
  n = put_str (line, n, sizeof line, "trace: ");
  n = put_str (line, n, sizeof line, names[what]);
  n = put_str (line, n, sizeof line, "(");
  n = put_u64 (line, n, sizeof line, arg);
  n = put_str (line, n, sizeof line, ") in thread ");
  n = put_str (line, n, sizeof line, comm);
  n = put_str (line, n, sizeof line, "\n");
  nf = backtrace (frames, 32);
  while (__atomic_exchange_n (&trace_lock, 1, __ATOMIC_ACQUIRE))
    ;
  write_all (line, n);
  backtrace_symbols_fd (frames + 1, nf > 1 ? nf - 1 : 0, log_fd);
  write_all ("trace: end\n", 11);
  __atomic_store_n (&trace_lock, 0, __ATOMIC_RELEASE);
}

/* Count one call.  Calls made while we are already inside a hook (by
 * backtrace, say) are not the program's and are not counted. */
static inline __attribute__ ((always_inline)) void
count (int what, uint64_t arg)
{
  if (in_hook)
    return;
  __atomic_fetch_add (&counters[what], 1, __ATOMIC_RELAXED);
  in_hook = 1;
  trace (what, arg);
  in_hook = 0;
}

static void
on_sigusr1 (int sig)
{
  char line[1024];
  size_t n = 0;
  int saved_errno = errno;

  n = put_str (line, n, sizeof line, "seq=");
  n = put_u64 (line, n, sizeof line,
               __atomic_add_fetch (&seq, 1, __ATOMIC_RELAXED));
  for (int i = 0; i < NR_COUNTERS; i++) {
    n = put_str (line, n, sizeof line, " ");
    n = put_str (line, n, sizeof line, names[i]);
    n = put_str (line, n, sizeof line, "=");
    n = put_u64 (line, n, sizeof line,
                 __atomic_load_n (&counters[i], __ATOMIC_RELAXED));
  }
  n = put_str (line, n, sizeof line, "\n");
  write_all (line, n);
  __atomic_store_n (&armed, true, __ATOMIC_RELEASE);
  errno = saved_errno;
}

__attribute__ ((constructor)) static void
alloc_counter_init (void)
{
  const char *path = getenv ("UBDKIT_ALLOC_LOG");
  const char *t = getenv ("UBDKIT_ALLOC_TRACE");
  struct sigaction sa;
  void *frames[4];

  resolve ();
  if (!path || !*path)
    return;
  /* The first backtrace loads libgcc_s (and allocates): do it now. */
  backtrace (frames, 4);
  trace_left = t ? atol (t) : 0;
  log_fd = open (path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_sigusr1;
  sa.sa_flags = SA_RESTART;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGUSR1, &sa, NULL);
}

/* The malloc family. */

void *
malloc (size_t n)
{
  if (!real_malloc) {
    if (resolving)
      return boot_alloc (n);
    resolve ();
  }
  count (C_MALLOC, n);
  return real_malloc (n);
}

void *
calloc (size_t nmemb, size_t size)
{
  if (!real_calloc) {
    if (resolving) {
      /* boot_buf is static, hence zeroed, and never reused. */
      if (size && nmemb > SIZE_MAX / size)
        return NULL;
      return boot_alloc (nmemb * size);
    }
    resolve ();
  }
  count (C_CALLOC, nmemb * size);
  return real_calloc (nmemb, size);
}

void *
realloc (void *p, size_t n)
{
  if (!real_realloc || is_boot (p)) {
    void *q;
    if (!real_realloc && resolving)
      return NULL;
    resolve ();
    if (!is_boot (p))
      return realloc (p, n);
    /* Move a bootstrap block to the real heap (its size is unknown: copy
     * what the buffer can hold). */
    q = malloc (n);
    if (q) {
      size_t avail = boot_buf + sizeof boot_buf - (char *) p;
      memcpy (q, p, n < avail ? n : avail);
    }
    return q;
  }
  count (C_REALLOC, n);
  return real_realloc (p, n);
}

void *
reallocarray (void *p, size_t nmemb, size_t size)
{
  resolve ();
  count (C_REALLOCARRAY, nmemb * size);
  return real_reallocarray (p, nmemb, size);
}

int
posix_memalign (void **out, size_t align, size_t n)
{
  resolve ();
  count (C_POSIX_MEMALIGN, n);
  return real_posix_memalign (out, align, n);
}

void *
aligned_alloc (size_t align, size_t n)
{
  resolve ();
  count (C_ALIGNED_ALLOC, n);
  return real_aligned_alloc (align, n);
}

void *
memalign (size_t align, size_t n)
{
  resolve ();
  count (C_MEMALIGN, n);
  return real_memalign (align, n);
}

void *
valloc (size_t n)
{
  resolve ();
  count (C_VALLOC, n);
  return real_valloc (n);
}

void *
pvalloc (size_t n)
{
  resolve ();
  count (C_PVALLOC, n);
  return real_pvalloc (n);
}

void
free (void *p)
{
  if (!p || is_boot (p))
    return;
  resolve ();
  count (C_FREE, 0);
  real_free (p);
}

/* Mappings. */

void *
mmap (void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
  resolve ();
  count (flags & MAP_ANONYMOUS ? C_MMAP_ANON : C_MMAP_FILE, len);
  return real_mmap (addr, len, prot, flags, fd, off);
}

void *mmap64 (void *addr, size_t len, int prot, int flags, int fd, off_t off)
  __attribute__ ((alias ("mmap")));

void *
mremap (void *old, size_t old_len, size_t new_len, int flags, ...)
{
  void *new_addr = NULL;

  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start (ap, flags);
    new_addr = va_arg (ap, void *);
    va_end (ap);
  }
  resolve ();
  count (C_MREMAP, new_len);
  return real_mremap (old, old_len, new_len, flags, new_addr);
}

int
munmap (void *addr, size_t len)
{
  resolve ();
  count (C_MUNMAP, len);
  return real_munmap (addr, len);
}

int
brk (void *addr)
{
  resolve ();
  count (C_BRK, (uintptr_t) addr);
  return real_brk (addr);
}

void *
sbrk (intptr_t incr)
{
  resolve ();
  count (C_SBRK, incr);
  return real_sbrk (incr);
}

int
pthread_create (pthread_t *t, const pthread_attr_t *attr,
                void *(*fn) (void *), void *arg)
{
  resolve ();
  count (C_PTHREAD_CREATE, 0);
  return real_pthread_create (t, attr, fn, arg);
}
