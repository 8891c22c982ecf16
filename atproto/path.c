#include "atproto/path.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *path_absolute(const char *path)
{
    if (path[0] == '/') return strdup(path);
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return NULL;
    char *out = NULL;
    int in_cwd = !path[0] || !strcmp(path, ".");
    if (asprintf(&out, "%s%s%s", cwd, in_cwd ? "" : "/", in_cwd ? "" : path) < 0) out = NULL;
    free(cwd);
    return out;
}

int path_dir(const char *path, char *out, size_t n)
{
    const char *slash = strrchr(path, '/');
    int len = !slash ? snprintf(out, n, ".")
                     : snprintf(out, n, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    return len < 0 || (size_t)len >= n ? -1 : 0;
}

int path_make_dirs(const char *dir, char *failed, size_t n)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        snprintf(failed, n, "%.64s...", dir);
        errno = ENAMETOOLONG;
        return -1;
    }
    /* Each prefix ending before a '/', then the whole path. */
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            snprintf(failed, n, "%s", path);
            return -1;
        }
        int bad = stat(path, &st) < 0;
        if (!bad && !S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            bad = 1;
        }
        if (bad) {
            snprintf(failed, n, "%s", path);
            return -1;
        }
        *p = saved;
        if (!saved) return 0;
    }
}
