/* File system paths from configuration: made absolute against one stated base (the working
 * directory at start-up), so logs and errors show where a relative setting really points. */
#ifndef ATPROTO_PATH_H
#define ATPROTO_PATH_H

#include <stddef.h>

/* A malloc'd absolute form of path: itself when it starts with '/', else the working directory,
 * '/', path ("./" prefixes dropped). NULL when out of memory or the working directory is gone
 * (errno set). */
char *path_absolute(const char *path);

/* The directory part of path into out (n bytes): what comes before its last '/', "/" for a
 * name at the root, "." for a bare name. 0, or -1 when it does not fit (nothing truncated). */
int path_dir(const char *path, char *out, size_t n);

/* Creates dir and any missing parents (mode 0755 before umask), like mkdir -p. 0, or -1 with
 * errno set and the directory that failed copied into failed (n bytes). */
int path_make_dirs(const char *dir, char *failed, size_t n);

#endif
