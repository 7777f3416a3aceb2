/**
 * Webhook attempt records on their way to Redis, grouped by the hash tag of their runs. A record
 * is written by the next `complete_run` of a run with the same tag, in the same round trip, when
 * one is sent in the same turn of the event loop; else, at the end of that turn, all records of a
 * tag go in one `record_webhook_attempts` call. Either way, one round trip less per webhook than a
 * script call of its own: with a webhook per run, the completion path made two script calls per
 * run where BullMQ's `moveToFinished` makes one.
 */

/** One attempt as record_attempt (lib.lua) reads it. */
export interface AttemptArg {
  id: string;
  event: string;
  outcome: string;
  record: string;
  delay_ms: number;
  status_code: string | number;
}

interface Pending {
  attempt: AttemptArg;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** Records taken to ride along a script call: `encoded` goes into its options as `attempts`. */
export interface CarriedAttempts {
  encoded: string;
  /** Call with the outcome of the script that carried them: their writers are told. */
  settle(err: Error | null): void;
}

export class AttemptRecords {
  private pending = new Map<string, Pending[]>();
  private scheduled = false;

  /** `write` sends the records of one tag (`base`) in one script call of their own. */
  constructor(private readonly write: (base: string, encoded: string) => Promise<unknown>) {}

  /** Resolves when the record is written; rejects when the call that carried it failed (the caller retries). */
  add(base: string, attempt: AttemptArg): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const list = this.pending.get(base);
      if (list) list.push({ attempt, resolve, reject });
      else this.pending.set(base, [{ attempt, resolve, reject }]);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** The records of `base` still waiting, for a script call on that tag to carry; null when none. */
  take(base: string): CarriedAttempts | null {
    const list = this.pending.get(base);
    if (!list) return null;
    this.pending.delete(base);
    return carried(list);
  }

  private flush(): void {
    this.scheduled = false;
    const all = this.pending;
    this.pending = new Map();
    for (const [base, list] of all) {
      const c = carried(list);
      this.write(base, c.encoded).then(
        () => c.settle(null),
        (err: Error) => c.settle(err),
      );
    }
  }
}

function carried(list: Pending[]): CarriedAttempts {
  return {
    encoded: JSON.stringify(list.map((p) => p.attempt)),
    settle(err) {
      for (const p of list) {
        if (err) p.reject(err);
        else p.resolve();
      }
    },
  };
}
