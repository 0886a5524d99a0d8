/* Ceph's client libraries, loaded when an rbd backend opens (see rbd.h
 * for why not linked).  Their sonames have been these since Ceph 0.56. */
#include <config.h>

#include <dlfcn.h>
#include <pthread.h>

#include "rbd.h"
#include "log.h"

#define RADOS_SONAME "librados.so.2"
#define RBD_SONAME "librbd.so.1"

struct rbd_lib rbd_ceph;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_status;         /* 0 not yet, 1 loaded, -1 failed */

/* dlsym every name of LIST from H; -1 after logging the first missing. */
#define RBD_LIB_SYM(fn) \
  if (!(rbd_ceph.fn = (__typeof__ (fn) *) dlsym (h, #fn))) { \
    log_error ("rbd: %s: no %s (Ceph 16.2 or later is needed)", so, #fn); \
    return -1; \
  }

static int
load_rados (void *h, const char *so)
{
  RBD_LIB_RADOS (RBD_LIB_SYM)
  return 0;
}

static int
load_rbd (void *h, const char *so)
{
  RBD_LIB_RBD (RBD_LIB_SYM)
  return 0;
}

static int
load (void)
{
  /* Never closed: librados keeps threads and exit handlers. */
  void *rados = dlopen (RADOS_SONAME, RTLD_NOW | RTLD_LOCAL);
  void *rbd = rados ? dlopen (RBD_SONAME, RTLD_NOW | RTLD_LOCAL) : NULL;

  if (!rbd) {
    log_error ("rbd: %s (Debian: librados2 and librbd1)", dlerror ());
    return -1;
  }
  return load_rados (rados, RADOS_SONAME) == -1 ||
         load_rbd (rbd, RBD_SONAME) == -1 ? -1 : 0;
}

int
rbd_lib_load (void)
{
  int r;

  pthread_mutex_lock (&load_lock);
  if (load_status == 0)
    load_status = load () == 0 ? 1 : -1;
  r = load_status == 1 ? 0 : -1;
  pthread_mutex_unlock (&load_lock);
  return r;
}
