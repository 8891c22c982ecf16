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

void redact_url_list(const char *list, char *out, size_t n)
{
    if (!n) return;
    size_t used = 0;
    out[0] = '\0';
    for (const char *item = list; used + 1 < n;) {
        size_t len = strcspn(item, ",");
        char one[512], shown[600];
        snprintf(one, sizeof one, "%.*s", (int)len, item);
        redact_url(one, shown, sizeof shown);
        int w = snprintf(out + used, n - used, "%s%s", shown, item[len] ? "," : "");
        if (w < 0 || (size_t)w >= n - used) break; /* truncated to fit, still terminated */
        used += (size_t)w;
        if (!item[len]) break;
        item += len + 1;
    }
}
