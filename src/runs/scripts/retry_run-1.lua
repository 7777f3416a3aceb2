-- failed | timed_out | expired -> queued: the same run dispatched again, for the run's owner only
-- (checked here, in the same step). Its request (kept at finish for these statuses: lib.lua
-- `finish`) goes to the back of its owner's line as a new arrival; the outcome it had is added to
-- its previous outcomes (the latest 20) and cleared; its dispatch and webhook histories stay. Its
-- attempts go on counting, and MAX_DISPATCH_ATTEMPTS counts again from here (attempt_base).
-- Refused while the webhook of the outcome it had is still being delivered: that delivery reads the
-- run, and must not see it queued.
-- KEYS: run. ARGV (by name): id, base, owner (fingerprint), admin ('1' for the unscoped admin API),
-- channel, keep (previous outcomes kept).
-- Returns 'ok', 'missing' (also: not the owner's), 'pending' (a webhook delivery still pending),
-- 'dropped' (its request is no longer stored), or the status it has when that is not retryable.
local o = options()
local f = redis.call('HMGET', KEYS[1], 'status', 'owner', 'queue', 'prio', 'bucket', 'target', 'wh_status', 'webhook_url',
  'error', 'res_status', 'started_at', 'finished_at', 'attempt', 'prev_log')
local status = f[1]
if not status then return 'missing' end
if o.admin ~= '1' and (f[2] or '') ~= o.owner then return 'missing' end
if status ~= 'failed' and status ~= 'timed_out' and status ~= 'expired' then return status end
if not f[6] then return 'dropped' end
if f[7] == 'pending' then return 'pending' end
local now = now_ms()
local record = cjson.encode({
  status = status,
  error = f[9] or nil,
  status_code = tonumber(f[10]),
  started_at = tonumber(f[11]),
  finished_at = tonumber(f[12]),
  attempts = tonumber(f[13]),
  retried_at = now,
})
local log = (f[14] or '') .. record .. '\n'
local _, lines = string.gsub(log, '\n', '')
while lines > tonumber(o.keep) do
  log = string.sub(log, string.find(log, '\n', 1, true) + 1)
  lines = lines - 1
end
redis.call('HDEL', KEYS[1], 'started_at', 'finished_at', 'error', 'error_message', 'res_status', 'res_content_type', 'res_headers',
  'res_body', 'res_size', 'res_truncated', 'worker', 'queue_reason', 'next_attempt_at', 'bp_tries')
redis.call('HSET', KEYS[1], 'status', 'queued', 'queued_at', now, 'retried_at', now, 'attempt_base', f[13] or 0, 'prev_log', log)
if f[8] and f[8] ~= '' then redis.call('HSET', KEYS[1], 'wh_status', 'pending', 'wh_try', 0, 'wh_next_at', '') end
-- A queued run never expires (finish sets its expiry again).
redis.call('PERSIST', KEYS[1])
local qp, queued_key = queue_keys(o.base, f[3])
line_push(qp, o.id, f[4], f[5], false)
if redis.call('ZADD', queued_key, now, o.id) == 1 and redis.call('ZCARD', queued_key) == 1 then
  notify(o.channel, 'queued:' .. f[3])
end
return 'ok'
