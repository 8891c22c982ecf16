#include "atproto/redact.h"

#include <stdio.h>
#include <string.h>

void redact_url(const char *url, char *out, size_t n)
{
    if (!n) return;
    const char *scheme_end = strstr(url, "://");
    const char *auth = scheme_end ? scheme_end + 3 : NULL;
    size_t alen = auth ? strcspn(auth, "/?#") : 0;
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
        if (auth[i] == '@') at = auth + i; /* the last one: a password may hold '@' */
    if (!at) {
        snprintf(out, n, "%s", url);
        return;
    }
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    const char *keep_end = colon ? colon + 1 : auth; /* scheme, "://" and the user name */
    snprintf(out, n, "%.*s***%s", (int)(keep_end - url), url, at);
}
