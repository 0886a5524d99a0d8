/* Internal to lib/core: the worker pool behind backend_start. */
#ifndef UBDKIT_WORKERS_H
#define UBDKIT_WORKERS_H

#include "ubdkit/backend.h"

/* Queue IO for a worker; its done callback later runs on L's thread. */
void backend_workers_run (const struct backend *b, struct loop *l,
                          struct backend_io *io);

/* backend.c, on a worker: BC's backend connect, then its answers cached
 * in bc->view (0 or -errno); and its disconnect. */
int backend_conn_open (struct backend_conn *bc);
void backend_conn_close (struct backend_conn *bc);
/* The steps before connect, of bc->asked: 0 or -errno. */
int backend_conn_preconnect (struct backend_conn *bc);
int backend_conn_list (struct backend_conn *bc);

#endif
