-- running -> succeeded | failed | timed_out, only for the worker and attempt that hold the run
-- (a cancel or a lease expiry that came first wins, and this is a no-op).
-- With a webhook and a hand-off window > 0, the delivery is taken by this worker at once (due
-- only after the window, for another worker to take if this one dies), saving a claim. With
-- `next` > 0, up to that many queued runs are taken for this worker in the same step (the slot
-- this run frees), as a claim_runs would.
-- KEYS: run, leases, webhooks, queue. ARGV: id, worker, attempt, status, ttl ms, channel,
-- hand-off window ms (0 = none), next (0 = none), key base, lease ms, inline body bytes of the
-- runs taken along, field1, value1, ...
-- Returns 0 when the run was not this worker's, else { finished_at, webhook url, webhook id,
-- claimed runs (as claim_runs returns them) } ('' for url and id when nothing was handed off).
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
if cur[1] ~= 'running' or cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then return 0 end
local now = now_ms()
if #ARGV > 11 then redis.call('HSET', KEYS[1], unpack(ARGV, 12)) end
redis.call('ZREM', KEYS[2], ARGV[1])
local window = tonumber(ARGV[7])
local due = nil
if window > 0 then due = now + window end
local url = finish(KEYS[1], KEYS[3], ARGV[1], ARGV[4], now, tonumber(ARGV[5]), ARGV[6], due)
local claimed = {}
if tonumber(ARGV[8]) > 0 then
  claimed = claim(KEYS[4], KEYS[2], ARGV[9], ARGV[2], tonumber(ARGV[10]), tonumber(ARGV[8]), now, tonumber(ARGV[11]))
end
if url and window > 0 then
  return { now, url, redis.call('HGET', KEYS[1], 'wh_id'), claimed }
end
return { now, '', '', claimed }
