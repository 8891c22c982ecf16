/* Secrets kept out of what operators see: logs, error messages, /metrics and _health. */
#ifndef ATPROTO_REDACT_H
#define ATPROTO_REDACT_H

#include <stddef.h>

/* Copies url into out (n bytes, always terminated, truncated to fit) with the password of its
 * userinfo replaced by three stars: redis://:PW@h:6379/0 shows as redis://:(stars)@h:6379/0,
 * redis://USER:PW@h keeps USER, and redis://PW@h loses PW too (Redis clients take a lone
 * userinfo as the password). Text without userinfo is copied as is. */
void redact_url(const char *url, char *out, size_t n);
/* The same for each item of a comma-separated list of URLs (cluster seed nodes). */
void redact_url_list(const char *list, char *out, size_t n);

#endif
