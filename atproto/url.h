/* Small URL string helpers shared by both services. */
#ifndef ATPROTO_URL_H
#define ATPROTO_URL_H

/* Removes every trailing '/' from s in place ("https://h/x//" -> "https://h/x"), so a path can
 * be appended with one '/'. */
void url_trim_slashes(char *s);

/* A malloc'd copy of url with its trailing slashes removed (url_trim_slashes); NULL when out
 * of memory. */
char *url_dup_base(const char *url);

#endif
