/* The lease that elects the one ingesting replica among appviews sharing a Valkey: a key
 * (P ingest-lease) naming its holder, taken when free and renewed every third of its TTL.
 * The backfill elects its one worker the same way (P backfill-lease).
 *
 * A holder that cannot renew in time (Valkey slow or unreachable) counts the lease as lost
 * when its TTL has run out since the last renewal Valkey confirmed, which is no later than
 * Valkey lets the key expire: two replicas never both believe they hold it. Commands the old
 * holder already queued are the new holder's fencing's business (appview/ingest.h). */
#ifndef APPVIEW_LEASE_H
#define APPVIEW_LEASE_H

#include <uv.h>

#include "cache/client.h"

typedef struct lease lease;

/* Called when this process comes to hold the lease (held 1) or stops holding it (held 0). */
typedef void (*lease_cb)(int held, void *ud);

/* Registers its script: call before cache_start. ttl_ms >= 300. The ingest lease. */
lease *lease_new(uv_loop_t *loop, cache_client *v, const char *key, unsigned ttl_ms, lease_cb cb,
                 void *ud);
/* A lease for another role, named in its log lines and metrics (appview_<role>_lease_held,
 * appview_<role>_lease_changes_total): "backfill" (appview/backfill.h). */
lease *lease_new_for(uv_loop_t *loop, cache_client *v, const char *role, const char *key,
                     unsigned ttl_ms, lease_cb cb, void *ud);
/* Tries to take the lease now and then every third of its TTL until released. */
void lease_start(lease *l);
int lease_held(const lease *l);
/* Gives the lease up (so another replica takes over at once) and stops trying; the key is
 * deleted once lease_releasing turns 0. */
void lease_release(lease *l);
int lease_releasing(const lease *l);
void lease_free(lease *l);

#endif
