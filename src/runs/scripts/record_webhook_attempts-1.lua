-- The records of webhook attempts that ended together, for runs of one hash tag (lib.lua
-- record_attempt says what each does): one round trip for all of them.
-- KEYS: the tag's webhooks set.
-- ARGV (by name): base (the runs' hashes are <base>:run:<id>), attempts (JSON list of
-- { id, event, outcome, record, delay_ms, status_code }), ttl_ms, keep (history length).
-- Returns each attempt's result in order: 1, or 0 when its run is gone.
local o = options()
return record_attempts(o, KEYS[1], now_ms())
