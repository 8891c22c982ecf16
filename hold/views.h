/* JSON shapes of the hold's data, shared by the stats API and the record view. */
#ifndef HOLD_VIEWS_H
#define HOLD_VIEWS_H

#include <jansson.h>
#include <stdint.h>

#include "hold/config.h"
#include "hold/store.h"

#define HOLD_STATS_COLLECTION "io.atcr.hold.stats"

/* Milliseconds since the epoch as an atproto datetime, "2026-11-22T11:50:00.123Z". */
void hold_iso_time(int64_t ms, char out[32]);
/* {did, repository, pullCount, pushCount, lastPull?, lastPush?} (io.atcr.hold.getStats). */
json_t *view_stats(const char *did, const char *repository, const store_row *row);
/* {uri, cid, value} with value an io.atcr.hold.stats record. NULL when out of memory. */
json_t *view_record(const char *hold_did, const store_row *row);
/* The hold's DID document with its #atcr_hold service entry. */
json_t *view_did_doc(const hold_config *c);

#endif
