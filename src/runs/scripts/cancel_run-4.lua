-- queued | running -> cancelled. A running run's worker is told on the channel to abort its call.
-- KEYS: run, queue, leases, webhooks. ARGV: id, ttl ms, channel.
-- Returns the status the run had ('missing' when there is none).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
local now = now_ms()
if status == 'queued' then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('PUBLISH', ARGV[3], 'cancel:' .. ARGV[1])
end
redis.call('HSET', KEYS[1], 'error', 'cancelled', 'error_message', 'the run was cancelled')
finish(KEYS[1], KEYS[4], ARGV[1], 'cancelled', now, tonumber(ARGV[2]), ARGV[3])
return status
