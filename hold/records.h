/* ATProto record view of the counters: com.atproto.repo.describeRepo, getRecord and
 * listRecords for repo = the hold's DID and collection io.atcr.hold.stats, plus the hold's
 * /.well-known/did.json. Records are computed from the current counters on each read. */
#ifndef HOLD_RECORDS_H
#define HOLD_RECORDS_H

#include "atproto/httpd.h"
#include "hold/api.h"

int hold_records_routes(hold_api *a, httpd *h);

#endif
