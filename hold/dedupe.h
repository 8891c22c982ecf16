/* Remembers recently counted keys for a time window, so that one `docker pull` fetching many
 * layers counts as one pull. In memory only: a restart forgets the window, which can count a
 * pull in progress twice but never loses one. Loop thread only. */
#ifndef HOLD_DEDUPE_H
#define HOLD_DEDUPE_H

#include <stddef.h>

typedef struct dedupe dedupe;

dedupe *dedupe_new(double window_seconds);
void dedupe_free(dedupe *d);
/* 1 when key was not counted within the window ending at now (it is now recorded),
 * 0 when it was. On out of memory answers 1: counting twice beats losing a pull. */
int dedupe_first(dedupe *d, const char *key, double now);
size_t dedupe_size(const dedupe *d);

#endif
