import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const FORMAT = 'v1.';

/**
 * The per-request webhook secrets (`X-Webhook-Secret`) at rest, in the run's Redis hash. They
 * must be readable again to sign each attempt, so they are encrypted, not hashed: AES-256-GCM
 * with a random 96-bit nonce per secret and the run id as additional authenticated data, so a
 * ciphertext copied onto another run does not open there. Stored as `v1.<base64 nonce|tag|ciphertext>`.
 * The first key seals; every key is tried to open, so a new key can be put first while runs
 * sealed with the old one are still delivered (docs/SECURITY.md, "Webhooks").
 */
export class SecretBox {
  constructor(private readonly keys: readonly Buffer[]) {
    keys.forEach((k, i) => {
      if (k.length !== 32) throw new Error(`encryption key #${i + 1} must be 32 bytes, not ${k.length}`);
    });
  }

  /** False without a key: secrets cannot be stored. */
  get enabled(): boolean {
    return this.keys.length > 0;
  }

  seal(secret: Buffer, runId: string): string {
    const key = this.keys[0];
    if (!key) throw new Error('no encryption key configured');
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(runId, 'latin1'));
    const sealed = Buffer.concat([cipher.update(secret), cipher.final()]);
    return FORMAT + Buffer.concat([nonce, cipher.getAuthTag(), sealed]).toString('base64');
  }

  /** The secret, or null when no configured key opens it for this run (removed key, other run, tampered). */
  open(sealed: string, runId: string): Buffer | null {
    if (!sealed.startsWith(FORMAT)) return null;
    const raw = Buffer.from(sealed.slice(FORMAT.length), 'base64');
    if (raw.length < NONCE_BYTES + TAG_BYTES) return null;
    const nonce = raw.subarray(0, NONCE_BYTES);
    const tag = raw.subarray(NONCE_BYTES, NONCE_BYTES + TAG_BYTES);
    const data = raw.subarray(NONCE_BYTES + TAG_BYTES);
    for (const key of this.keys) {
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
        decipher.setAAD(Buffer.from(runId, 'latin1'));
        decipher.setAuthTag(tag);
        return Buffer.concat([decipher.update(data), decipher.final()]);
      } catch {
        // not this key: try the next
      }
    }
    return null;
  }
}
