/**
 * Cerebrium-compatible signatures (README "Webhooks"): the per-request secret sealed at rest with
 * AES-256-GCM (src/webhooks/secret-box.ts), and the signature as Cerebrium's documentation computes
 * it (https://docs.cerebrium.ai/cerebrium/endpoints/webhook).
 */
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../src/config';
import { SecretBox } from '../../src/webhooks';
import { buildStartedBody } from '../../src/webhooks/body';
import { cerebriumSignature } from '../../src/webhooks/signing';

const RUN = '3f1c0e1a-8d6b-8c0e-9a53-0c1f4a0b37a8';

describe('SecretBox (AES-256-GCM, the run id as associated data)', () => {
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);

  it('opens what it sealed, for that run only; the sealed form holds no plaintext', () => {
    const box = new SecretBox([k1]);
    const sealed = box.seal(Buffer.from('my-cerebrium-secret'), RUN);
    expect(sealed).toMatch(/^v1\.[A-Za-z0-9+/]+=*$/);
    expect(sealed).not.toContain('my-cerebrium-secret');
    expect(Buffer.from(sealed.slice(3), 'base64').includes(Buffer.from('my-cerebrium'))).toBe(false);
    expect(box.open(sealed, RUN)!.toString()).toBe('my-cerebrium-secret');
    expect(box.open(sealed, RUN.replace(/a8$/, 'a9'))).toBeNull(); // copied onto another run
    expect(box.seal(Buffer.from('same'), RUN)).not.toBe(box.seal(Buffer.from('same'), RUN)); // a fresh nonce each time
  });

  it('refuses a tampered or foreign ciphertext', () => {
    const box = new SecretBox([k1]);
    const raw = Buffer.from(box.seal(Buffer.from('secret'), RUN).slice(3), 'base64');
    raw[raw.length - 1]! ^= 1;
    expect(box.open(`v1.${raw.toString('base64')}`, RUN)).toBeNull();
    expect(box.open('v1.AAAA', RUN)).toBeNull();
    expect(box.open('plain', RUN)).toBeNull();
    expect(new SecretBox([k2]).open(box.seal(Buffer.from('secret'), RUN), RUN)).toBeNull();
  });

  it('rotates: the first key seals, every key opens', () => {
    const old = new SecretBox([k1]).seal(Buffer.from('kept'), RUN);
    const rotated = new SecretBox([k2, k1]);
    expect(rotated.open(old, RUN)!.toString()).toBe('kept');
    expect(new SecretBox([k2]).open(rotated.seal(Buffer.from('new'), RUN), RUN)!.toString()).toBe('new');
    expect(new SecretBox([]).enabled).toBe(false);
    expect(() => new SecretBox([randomBytes(16)])).toThrow(/32 bytes/);
  });

  it('takes its keys from WEBHOOK_SECRET_ENCRYPTION_KEY: base64 of 32 bytes, several for rotation, never echoed', () => {
    const a = k1.toString('base64');
    const b = k2.toString('base64');
    expect(loadConfig({ WEBHOOK_SECRET_ENCRYPTION_KEY: `${a}, ${b}` }, []).webhook.secretEncryptionKeys).toEqual([k1, k2]);
    expect(loadConfig({}, []).webhook.secretEncryptionKeys).toEqual([]);
    expect(() => loadConfig({ WEBHOOK_SECRET_ENCRYPTION_KEY: randomBytes(16).toString('base64') }, [])).toThrow(
      'invalid WEBHOOK_SECRET_ENCRYPTION_KEY=<redacted>: key 1 must decode to 32 bytes (this one is 16)',
    );
    expect(() => loadConfig({ WEBHOOK_SECRET_ENCRYPTION_KEY: 'not base64!' }, [])).toThrow(/<redacted>/);
  });
});

describe("Cerebrium's signature", () => {
  it('is v1, + hex HMAC-SHA256 of "<request id>.<timestamp>.<body>", keyed with the secret', () => {
    // Computed with the verify_webhook_signature function of Cerebrium's documentation (Python).
    expect(cerebriumSignature(Buffer.from('my-cerebrium-secret'), RUN, 1767225600, Buffer.from('{"smile": "wave"}'))).toBe(
      'v1,fd6b35dc52e142e4c161e33c86bf58e7216ad532cbcd8cfe0e0d9e838a8f8ced',
    );
  });
});

describe('the started event body', () => {
  it('names the event, the run, its status and when the app call began', () => {
    const b = buildStartedBody(RUN, Date.UTC(2026, 0, 1, 0, 0, 0, 123));
    expect(b.contentType).toBe('application/json');
    expect(JSON.parse(b.body.toString())).toEqual({ event: 'started', run_id: RUN, status: 'running', started_at: '2026-01-01T00:00:00.123Z' });
  });
});
