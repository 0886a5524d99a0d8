/* Memory that stays resident: mapped, prefaulted and kept out of forks. */
#ifndef UBDKIT_RESIDENT_H
#define UBDKIT_RESIDENT_H

#include <stddef.h>

/* Map LEN bytes of zeroed anonymous memory with every page present.
 * Mappings of 2 MiB or more are aligned to 2 MiB and asked to be backed by
 * transparent huge pages: the memory backend's store and the request
 * buffers are read at random, and with 4 KiB pages most of those reads
 * miss the TLB.  Release with munmap (p, LEN).  Returns NULL on failure
 * (errno set). */
void *resident_map (size_t len);

#endif
