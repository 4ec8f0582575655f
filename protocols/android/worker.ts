// Carries out queued AMAPI work: makes sure a policy exists (once per policy,
// not once per device), points devices at it, and runs admin commands —
// all through the quota limiter in client.ts. The queue is the durable
// record: a stop between the reconciler's decision and the API call loses
// nothing, and a call that failed for a passing reason is tried again later.
import type { Command, Store } from '../../controller/store/index.js';
import { AmapiError, type Amapi } from './client.js';
import { resolveSecrets } from './compile.js';
import { AMAPI_COMMANDS, APPLY_POLICY, DELETE_DEVICE, ISSUE_COMMAND, type ApplyPolicyPayload, type IssueCommandPayload } from './driver.js';
import type { AndroidEnrollmentState } from './status.js';

export interface WorkerLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface AmapiWorkerOptions {
  store: Store;
  amapi: Amapi;
  /** enterprises/E */
  enterprise: string;
  secret(name: string): string | undefined;
  log: WorkerLog;
  /** Commands claimed per pass. Default 200. */
  batch?: number;
  /** Calls in flight at once (the limiter still paces them). Default 8. */
  concurrency?: number;
}

export class AmapiWorker {
  /** Policy id → version the API returned, for policies this process made sure of. */
  private readonly ensured = new Map<string, Promise<string>>();
  private timer?: NodeJS.Timeout;
  private running?: Promise<number>;

  constructor(private readonly o: AmapiWorkerOptions) {}

  policyName(policyId: string): string {
    return `${this.o.enterprise}/policies/${policyId}`;
  }

  /** Policies this process created or updated (sync keeps them from garbage collection). */
  get ensuredPolicies(): string[] {
    return [...this.ensured.keys()];
  }

  /** One pass: claim, carry out, report. Returns how many commands it handled. */
  runOnce(): Promise<number> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  start(intervalMs = 1000): void {
    const loop = () => {
      this.runOnce()
        .catch((e: Error) => this.o.log.warn('AMAPI worker pass failed', { error: e.message }))
        .then((n) => {
          if (this.timer !== undefined || n === undefined) this.timer = setTimeout(loop, n ? 0 : intervalMs);
        });
    };
    this.timer = setTimeout(loop, 0);
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  private async pass(): Promise<number> {
    const claimed = await this.o.store.commands.claim({ types: AMAPI_COMMANDS, limit: this.o.batch ?? 200, leaseMs: 10 * 60_000 });
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(this.o.concurrency ?? 8, claimed.length) }, async () => {
        while (next < claimed.length) await this.handle(claimed[next++]!);
      }),
    );
    return claimed.length;
  }

  private async handle(c: Command): Promise<void> {
    const { store, log } = this.o;
    try {
      const e = await store.devices.getEnrollment(c.deviceId);
      const state = e?.state as Partial<AndroidEnrollmentState> | undefined;
      if (!state?.name) throw new AmapiError(`device ${c.deviceId} has no AMAPI device name (not enrolled through Android Enterprise)`, 404);
      if (c.type === APPLY_POLICY) {
        const p = c.payload as ApplyPolicyPayload;
        // Already pointed at it and the device has not reported since: a repeat, nothing to spend quota on.
        const reportedSince = state.lastStatusReportTime && state.expected?.at && Date.parse(state.lastStatusReportTime) > Date.parse(state.expected.at);
        if (state.expected?.policyId === p.policyId && !reportedSince) {
          await store.commands.report(c.uuid, { status: 'completed', result: { skipped: 'already set' } });
          return;
        }
        const version = await this.ensurePolicy(p);
        await this.o.amapi.setDevicePolicy(state.name, this.policyName(p.policyId));
        await store.transaction(async (tx) => {
          await store.devices.patchEnrollmentState(c.deviceId, { expected: { policyId: p.policyId, version, at: new Date().toISOString() } }, tx);
          await store.commands.report(c.uuid, { status: 'completed', result: { policy: this.policyName(p.policyId), version } }, tx);
        });
      } else if (c.type === ISSUE_COMMAND) {
        const p = c.payload as IssueCommandPayload;
        const op = await this.o.amapi.issueCommand(state.name, { type: p.type, ...(p.newPassword ? { newPassword: p.newPassword, resetPasswordFlags: ['REQUIRE_ENTRY'] } : {}) });
        // Done now, or when the COMMAND notification says so (pubsub.ts matches it by operation name).
        await store.commands.report(c.uuid, op.done ? (op.error ? { status: 'failed', error: op.error.message ?? 'the command failed', result: { operation: op.name } } : { status: 'completed', result: { operation: op.name } }) : { status: 'acknowledged', result: { operation: op.name } });
      } else if (c.type === DELETE_DEVICE) {
        await this.o.amapi.deleteDevice(state.name, (c.payload as { wipeDataFlags?: string[] }).wipeDataFlags ?? []);
        await store.commands.report(c.uuid, { status: 'completed' });
      }
    } catch (e) {
      const status = e instanceof AmapiError ? e.status : undefined;
      const message = (e as Error).message;
      // 4xx other than 429 will not get better by asking again; the rest is retried later.
      if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
        log.warn('AMAPI refused a command', { device: c.deviceId, type: c.type, error: message });
        await store.commands.report(c.uuid, { status: 'failed', error: message });
      } else {
        log.warn('AMAPI call failed; it will be tried again', { device: c.deviceId, type: c.type, error: message });
        await store.commands.report(c.uuid, { status: 'not_now', retryAfterMs: 30_000 });
      }
    }
  }

  /** Creates or updates the policy once per process, with secrets filled in only now; returns its version. */
  private ensurePolicy(p: ApplyPolicyPayload): Promise<string> {
    let v = this.ensured.get(p.policyId);
    if (!v) {
      v = (async () => {
        const { policy, missing } = resolveSecrets(p.policy, this.o.secret);
        if (missing.length) throw new AmapiError(`secret${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not set`, 400);
        const saved = await this.o.amapi.patchPolicy(this.policyName(p.policyId), policy);
        return String(saved.version ?? '1');
      })();
      this.ensured.set(p.policyId, v);
      // A failure is not remembered: the next command tries again.
      v.catch(() => this.ensured.delete(p.policyId));
    }
    return v;
  }
}
