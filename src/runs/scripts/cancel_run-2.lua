-- queued | running -> cancelled, for the run's owner only (checked here, in the same step). A
-- running run's worker is told on the channel to abort its call.
-- KEYS: run, the tag's webhooks set. ARGV (by name): id, base, owner (fingerprint), admin ('1' for
-- the unscoped admin API), ttl_ms, channel, sharded.
-- Returns the status the run had ('missing' when there is none, or it is not the owner's).
local o = options()
local f = redis.call('HMGET', KEYS[1], 'status', 'owner', 'queue', 'prio', 'bucket')
local status = f[1]
if not status then return 'missing' end
if o.admin ~= '1' and (f[2] or '') ~= o.owner then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
local qp, queued_key, delayed_key, leases_key = queue_keys(o.base, f[3])
if status == 'queued' then
  line_remove(qp, o.id, f[4], f[5])
  redis.call('ZREM', queued_key, o.id)
  redis.call('ZREM', delayed_key, o.id)
else
  redis.call('ZREM', leases_key, o.id)
  notify(o.channel, 'cancel:' .. o.id)
end
redis.call('HSET', KEYS[1], 'error', 'cancelled', 'error_message', 'the run was cancelled')
finish(KEYS[1], KEYS[2], o.id, 'cancelled', now_ms(), tonumber(o.ttl_ms), o.channel)
return status
