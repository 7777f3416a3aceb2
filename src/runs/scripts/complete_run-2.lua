-- running -> succeeded | failed | timed_out, only for the worker and attempt that hold the run
-- (a cancel or a lease expiry that came first wins, and this is a no-op).
-- With a webhook and a hand-off window > 0, the delivery is taken by this worker at once (due
-- only after the window, for another worker to take if this one dies), saving a claim. With
-- `next` > 0, up to that many queued runs of the same queue are taken for this worker in the same
-- step (the slot this run frees), as claim_runs would.
-- KEYS: run, the tag's webhooks set.
-- ARGV (by name): id, worker, attempt, status, window_ms (0 = none), next (0 = none), and for
-- claim (lib.lua): base, queue, lease_ms, limit, queue_time_ms, ttl_ms, channel, sharded, inline_bytes,
-- fields; attempts, keep: records of webhook attempts of this tag's runs that ended meanwhile
-- (lib.lua record_attempts; applied whether or not the run is still this worker's); then the
-- outcome's hash fields as field1, value1, ...
-- Returns 0 when the run was not this worker's, else { finished_at, webhook url, webhook id,
-- claimed runs (as claim_runs returns them), sealed webhook secret, the started event's
-- webhook-timestamp } ('' for url and id when nothing was handed off, and for the last two when
-- the run has none).
local o, rest = options()
local now = now_ms()
record_attempts(o, KEYS[2], now)
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
if cur[1] ~= 'running' or cur[2] ~= o.worker or cur[3] ~= o.attempt then return 0 end
if #ARGV >= rest then redis.call('HSET', KEYS[1], unpack(ARGV, rest)) end
local _, _, _, leases_key = queue_keys(o.base, o.queue)
redis.call('ZREM', leases_key, o.id)
local window = tonumber(o.window_ms)
local due = nil
if window > 0 then due = now + window end
local url = finish(KEYS[1], KEYS[2], o.id, o.status, now, tonumber(o.ttl_ms), o.channel, due)
local claimed = {}
if tonumber(o.next) > 0 then claimed = claim(o, now, KEYS[2], tonumber(o.next)) end
if url and window > 0 then
  local w = redis.call('HMGET', KEYS[1], 'wh_id', 'wh_secret', 'ws_ts')
  return { now, url, w[1], claimed, w[2] or '', w[3] or '' }
end
return { now, '', '', claimed, '', '' }
