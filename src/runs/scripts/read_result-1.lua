-- (read) A finished run's stored response, for GET /result and sync-if-fast answers, only for its
-- owner: the owner is checked before the body is read, so another tenant's probe moves no body and
-- takes as long as an unknown id (no existence oracle). A body over `max_bytes` (0 = no limit) is
-- not read: the caller cannot send it anyway.
-- KEYS: run. ARGV (by name): owner (fingerprint), admin ('1' for the unscoped admin API), max_bytes.
-- Returns false when missing or not visible, else { status, res_status, content type, headers,
-- body (false when over max_bytes), truncated ('1' when the body was cut at MAX_RESULT_BYTES),
-- body size }.
local o = options()
local head = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not head[1] then return false end
if o.admin ~= '1' and (head[2] or '') ~= o.owner then return false end
local r = redis.call('HMGET', KEYS[1], 'res_status', 'res_content_type', 'res_headers', 'res_truncated')
local size = redis.call('HSTRLEN', KEYS[1], 'res_body')
local max = tonumber(o.max_bytes or '0')
local body = false
if max == 0 or size <= max then body = redis.call('HGET', KEYS[1], 'res_body') or '' end
return { head[1], r[1] or '', r[2] or '', r[3] or '', body, r[4] or '', size }
