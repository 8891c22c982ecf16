/* Runs a harness over saved inputs once, without libFuzzer (so any compiler will do): every
 * file of tests/fuzz/corpus/<FUZZ_NAME>/, or the files and directories given as arguments (to
 * reproduce one crash). Prints "ok - corpus (N inputs)" in the unit-test format; a failing
 * input aborts with its name on stderr. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *data = malloc(cap);
    size_t n;
    while (data && (n = fread(data + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *more = realloc(data, cap *= 2);
            if (!more) free(data);
            data = more;
        }
    }
    fclose(f);
    if (!data) return -1;
    fprintf(stderr, "replaying %s\n", path);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

/* Replays path (a file, or every file of a directory, in name order); the count, or -1. */
static long replay(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) return replay_file(path) < 0 ? -1 : 1;
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) return -1;
    long count = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.' && count >= 0) {
            char full[4096];
            snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name);
            count = replay_file(full) < 0 ? -1 : count + 1;
        }
        free(names[i]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv)
{
    long total = 0;
    if (argc < 2) {
        total = replay("tests/fuzz/corpus/" FUZZ_NAME);
    } else {
        for (int i = 1; i < argc && total >= 0; i++) {
            long n = replay(argv[i]);
            total = n < 0 ? -1 : total + n;
        }
    }
    if (total <= 0) {
        printf("not ok - corpus (none replayed)\n");
        return 1;
    }
    printf("ok - corpus (%ld inputs)\n", total);
    return 0;
}
