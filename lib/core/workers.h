/* Internal to lib/core: the worker pool behind backend_start. */
#ifndef UBDKIT_WORKERS_H
#define UBDKIT_WORKERS_H

#include "ubdkit/backend.h"

/* Queue IO for a worker; its done callback later runs on L's thread. */
void backend_workers_run (const struct backend *b, struct loop *l,
                          struct backend_io *io);

#endif
