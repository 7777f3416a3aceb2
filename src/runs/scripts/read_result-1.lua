-- (read) A finished run's stored response, for GET /result, only for its owner: the owner is
-- checked before the body is read, so another tenant's probe moves no body and takes as long as
-- an unknown id (no existence oracle).
-- KEYS: run. ARGV (by name): owner (fingerprint), admin ('1' for the unscoped admin API).
-- Returns false when missing or not visible, else { status, res_status, content type, headers, body }.
local o = options()
local head = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not head[1] then return false end
if o.admin ~= '1' and (head[2] or '') ~= o.owner then return false end
local r = redis.call('HMGET', KEYS[1], 'res_status', 'res_content_type', 'res_headers', 'res_body')
return { head[1], r[1] or '', r[2] or '', r[3] or '', r[4] or '' }
