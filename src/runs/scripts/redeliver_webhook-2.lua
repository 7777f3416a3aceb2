-- webhook delivered | failed -> pending: a new delivery on demand, with the same webhook-id,
-- for the run's owner only (checked here, in the same step). Refused for a cancelled run (it has
-- no outcome to report), while a delivery is still pending, and within `min interval` of the last
-- redelivery (each one costs the receiver a request; a loop of them is a flood).
-- KEYS: run, webhooks. ARGV (by name): id, owner (fingerprint), admin ('1' for the unscoped admin
-- API), min_interval_ms.
-- Returns 'ok', 'missing' (also: not the owner's), 'not_finished', 'no_webhook', 'cancelled',
-- 'pending' or 'too_soon'.
local o = options()
local f = redis.call('HMGET', KEYS[1], 'status', 'webhook_url', 'owner', 'wh_status', 'wh_redelivered_at')
if not f[1] then return 'missing' end
if o.admin ~= '1' and (f[3] or '') ~= o.owner then return 'missing' end
if f[1] == 'queued' or f[1] == 'running' then return 'not_finished' end
if f[1] == 'cancelled' then return 'cancelled' end
if not f[2] or f[2] == '' then return 'no_webhook' end
if f[4] == 'pending' then return 'pending' end
local now = now_ms()
if f[5] and now - tonumber(f[5]) < tonumber(o.min_interval_ms) then return 'too_soon' end
redis.call('HSET', KEYS[1], 'wh_status', 'pending', 'wh_next_at', now, 'wh_try', 0, 'wh_redelivered_at', now)
redis.call('ZADD', KEYS[2], now, o.id)
redis.call('PERSIST', KEYS[1])
return 'ok'
