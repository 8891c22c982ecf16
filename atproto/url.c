#include "atproto/url.h"

#include <stdlib.h>
#include <string.h>

void url_trim_slashes(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
}

char *url_dup_base(const char *url)
{
    char *s = strdup(url);
    if (s) url_trim_slashes(s);
    return s;
}
