-- A DID's identity changed (handle, PDS): drop the cached identity so the next query resolves
-- and verifies it again. KEYS[1] P{D}/id. Returns the handle that was cached ("" when none),
-- so the caller can drop its handle -> DID entry too.
local handle = redis.call('HGET', KEYS[1], 'handle')
redis.call('DEL', KEYS[1])
return handle or ''
