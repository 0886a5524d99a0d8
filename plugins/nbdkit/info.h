/* nbdkit's informational modes for a hosted plugin (plugins/nbdkit/info.c):
 * `ubdkit serve --dump-plugin nbdkit:PLUGIN`, `... nbdkit:PLUGIN --help`
 * and `... --version nbdkit:PLUGIN`.  A plain header for the option
 * parser.  NAME is what follows "nbdkit:".  Each prints on stdout and
 * returns 0, or -1 after logging why the plugin did not load. */
#ifndef UBDKIT_NBDKIT_INFO_H
#define UBDKIT_NBDKIT_INFO_H

int plughost_dump_plugin (const char *name);
int plughost_print_help (const char *name);
int plughost_print_version (const char *name);

#endif /* UBDKIT_NBDKIT_INFO_H */
