/* --mask-handshake (nbdkit's option): which global handshake flags the
 * server offers (lib/nbd/handshake.c). */
#ifndef UBDKIT_NBD_HANDSHAKE_MASK_H
#define UBDKIT_NBD_HANDSHAKE_MASK_H

/* Offer only the flags of MASK (bit 0 NBD_FLAG_FIXED_NEWSTYLE, bit 1
 * NBD_FLAG_NO_ZEROES; default all).  Set before server_start. */
void nbd_handshake_mask (unsigned mask);

#endif
