/* -D PLUGIN.FLAG=N: nbdkit's debug flags for hosted plugins.
 *
 * A plain header (no nbdkit headers) so the option parsers can include
 * it; the flags are applied by the plugin host when it loads the plugin.
 */
#ifndef UBDKIT_NBDKIT_DEBUGFLAGS_H
#define UBDKIT_NBDKIT_DEBUGFLAGS_H

/* Record one -D argument.  Returns 0, or -1 after printing why ARG is not
 * of the form NAME.FLAG=N. */
int plughost_debug_flag_option (const char *arg);

/* After the plugin called NAME is loaded from DL (before its load
 * callback, as nbdkit): set NAME_debug_FLAG to N for each of its flags.
 * Returns 0, or -1 after logging a flag the plugin does not have. */
int plughost_debug_flags_apply (void *dl, const char *name);

#endif /* UBDKIT_NBDKIT_DEBUGFLAGS_H */
