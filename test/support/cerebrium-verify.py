"""A webhook receiver's check, as Cerebrium's documentation shows it
(https://docs.cerebrium.ai/cerebrium/endpoints/webhook): the signature header without its
"v1," prefix must equal the hex HMAC-SHA256, keyed with the secret, of
"<X-Request-Id>.<X-Cerebrium-Webhook-Timestamp>.<body>". Reads one JSON object per line on stdin
({request_id, timestamp, body, signature, secret}) and prints "valid" or "invalid" for each."""
import hashlib
import hmac
import json
import sys


def verify(request_id, timestamp, body, signature, secret):
    received = signature.split(",")[1] if "," in signature else signature
    content = f"{request_id}.{timestamp}.{body}"
    expected = hmac.new(secret.encode(), content.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, received)


for line in sys.stdin:
    if line.strip():
        m = json.loads(line)
        print("valid" if verify(m["request_id"], m["timestamp"], m["body"], m["signature"], m["secret"]) else "invalid")
