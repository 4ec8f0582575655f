// Carries out queued AMAPI work: makes sure a policy exists (once per policy
// and content, not once per device), points devices at it, and runs admin
// commands — all through the quota limiter in client.ts. The queue is the
// durable record: a stop between the reconciler's decision and the API call
// loses nothing, and a call that failed for a passing reason is tried again
// later. 4xx answers (but 429) fail the command; a device AMAPI no longer
// knows (404) is marked unenrolled, so nothing waits for it.
//
// Run the worker in one process (the leader): the limiter that keeps it inside
// the project's quota is per process.
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { Command, Store } from '../../controller/store/index.js';
import { AmapiError, type Amapi } from './client.js';
import { compileAndroidPolicy, policyIdFor, resolveSecrets, scrubSecrets, type AmapiPolicy } from './compile.js';
import type { PolicyBundleSpec } from '../../controller/policy/types.js';
import { AMAPI_COMMANDS, APPLY_POLICY, DELETE_DEVICE, GET_DEVICE, ISSUE_COMMAND, type ApplyPolicyPayload, type DeleteDevicePayload, type IssueCommandPayload } from './driver.js';
import { markDeviceGone, recordDeviceStatus, type AndroidEnrollmentState } from './status.js';

export interface WorkerLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

/** What the worker needs of the store. */
export type WorkerStore = Pick<Store, 'commands' | 'devices' | 'events' | 'transaction' | 'bundles' | 'identities' | 'audit' | 'assignments'>;

export interface AmapiWorkerOptions {
  store: WorkerStore;
  amapi: Amapi;
  /** enterprises/E */
  enterprise: string;
  secret(name: string): string | undefined;
  log: WorkerLog;
  /** Commands claimed per pass. Default 200. */
  batch?: number;
  /** Calls in flight at once (the limiter still paces them). Default 8. */
  concurrency?: number;
  /** How long an issued command stays valid on AMAPI's side (Command.duration). Default 24 h. */
  commandTtlMs?: number;
  now?: () => Date;
}

/** What the worker did, for benchmarks and tests. */
export interface WorkerStats {
  policiesPatched: number;
  devicesPatched: number;
  /** applyPolicy commands that needed no API call (the device was already pointed there). */
  skipped: number;
  commandsIssued: number;
  devicesDeleted: number;
  failed: number;
  deferred: number;
}

const MAX_OPERATIONS = 20;

/** A device call answered 404: the device is gone from the enterprise. */
class DeviceGone extends Error {}

export class AmapiWorker {
  /** Policy id + content digest → the version AMAPI returned, for policies this process made sure of. */
  private readonly ensured = new Map<string, Promise<string>>();
  /** Policy id → the policy compiled from its bundles (the same ids, the same policy). */
  private readonly compiled = new Map<string, Promise<AmapiPolicy>>();
  private timer?: NodeJS.Timeout;
  private stopped = true;
  private running?: Promise<number>;
  readonly stats: WorkerStats = { policiesPatched: 0, devicesPatched: 0, skipped: 0, commandsIssued: 0, devicesDeleted: 0, failed: 0, deferred: 0 };

  constructor(private readonly o: AmapiWorkerOptions) {}

  policyName(policyId: string): string {
    return `${this.o.enterprise}/policies/${policyId}`;
  }

  /** Policy ids this process created or updated. */
  get ensuredPolicies(): string[] {
    return [...new Set([...this.ensured.keys()].map((k) => k.slice(0, k.indexOf(':'))))];
  }

  /** A policy was deleted: the next command that needs it creates it again. */
  forgetPolicy(policyId: string): void {
    for (const k of [...this.ensured.keys()]) if (k.startsWith(`${policyId}:`)) this.ensured.delete(k);
  }

  /** One pass: claim, carry out, report. Returns how many commands it handled. */
  runOnce(): Promise<number> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  /** Passes until the queue has no AMAPI work due (tests, benchmarks, `--once` tools). */
  async drain(): Promise<number> {
    let total = 0;
    for (let n = await this.runOnce(); n > 0; n = await this.runOnce()) total += n;
    return total;
  }

  start(intervalMs = 1000): void {
    this.stopped = false;
    const loop = () => {
      this.runOnce()
        .catch((e: Error) => {
          this.o.log.warn('AMAPI worker pass failed', { error: e.message });
          return 0;
        })
        .then((n) => {
          if (!this.stopped) this.timer = setTimeout(loop, n ? 0 : intervalMs);
        });
    };
    this.timer = setTimeout(loop, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  private async pass(): Promise<number> {
    const claimed = await this.o.store.commands.claim({ types: AMAPI_COMMANDS, limit: this.o.batch ?? 200, leaseMs: 10 * 60_000 });
    // Devices in parallel, each device's commands in queue order (a lock before the wipe that follows it).
    const byDevice = new Map<string, Command[]>();
    for (const c of claimed) {
      let l = byDevice.get(c.deviceId);
      if (!l) byDevice.set(c.deviceId, (l = []));
      l.push(c);
    }
    const queues = [...byDevice.values()];
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(this.o.concurrency ?? 8, queues.length) }, async () => {
        while (next < queues.length) for (const c of queues[next++]!) await this.handle(c);
      }),
    );
    return claimed.length;
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  private async handle(c: Command): Promise<void> {
    const { store, log } = this.o;
    try {
      const e = await store.devices.getEnrollment(c.deviceId);
      const state = e?.state as Partial<AndroidEnrollmentState> | undefined;
      if (!e || e.platform !== 'android' || !state?.name) throw new AmapiError(`device ${c.deviceId} has no AMAPI device name (it did not enroll through Android Enterprise)`, 404);
      if (e.status === 'unenrolled') throw new AmapiError(`device ${c.deviceId} was deleted from the Android enterprise`, 404);
      if (c.type === APPLY_POLICY) await this.applyPolicy(c, state as AndroidEnrollmentState);
      else if (c.type === ISSUE_COMMAND) await this.issueCommand(c, state as AndroidEnrollmentState);
      else if (c.type === DELETE_DEVICE) await this.deleteDevice(c, state as AndroidEnrollmentState);
      else if (c.type === GET_DEVICE) await this.refresh(c, state as AndroidEnrollmentState);
      else throw new AmapiError(`unknown AMAPI command type ${c.type}`, 400);
    } catch (err) {
      const status = err instanceof AmapiError ? err.status : undefined;
      const message = (err as Error).message;
      if (err instanceof DeviceGone) {
        this.stats.failed++;
        log.warn('AMAPI no longer knows the device; marking it unenrolled', { device: c.deviceId, type: c.type });
        await store.transaction(async (tx) => {
          await store.commands.report(c.uuid, { status: 'failed', error: message }, tx);
          await markDeviceGone(store, c.deviceId, message, tx);
        });
      } else if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
        // 4xx other than 429 will not get better by asking again.
        this.stats.failed++;
        log.warn('AMAPI refused a command', { device: c.deviceId, type: c.type, error: message });
        await store.commands.report(c.uuid, { status: 'failed', error: message });
      } else {
        this.stats.deferred++;
        const retryAfterMs = err instanceof AmapiError && err.retryAfterMs !== undefined ? Math.max(err.retryAfterMs, 1000) : 30_000;
        log.warn('AMAPI call failed; it will be tried again', { device: c.deviceId, type: c.type, error: message, retryAfterMs });
        await store.commands.report(c.uuid, { status: 'not_now', error: message, retryAfterMs });
      }
    }
  }

  /** A device call; a 404 means the device is gone. */
  private async deviceCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof AmapiError && e.status === 404) throw new DeviceGone(e.message);
      throw e;
    }
  }

  private async applyPolicy(c: Command, state: AndroidEnrollmentState): Promise<void> {
    const { store } = this.o;
    const p = c.payload as ApplyPolicyPayload;
    const target = this.policyName(p.policyId);
    const version = await this.ensurePolicy(p);
    // AMAPI already has the device on this policy (set earlier, or by its enrollment token): nothing to patch.
    if (state.policyName === target) {
      this.stats.skipped++;
      await store.transaction(async (tx) => {
        await store.devices.lockDevice(c.deviceId, tx);
        if (state.expected?.policyId !== p.policyId || state.expected.version !== version) {
          await store.devices.patchEnrollmentState(c.deviceId, { expected: { policyId: p.policyId, version, at: this.now().toISOString() } }, tx);
        }
        await store.commands.report(c.uuid, { status: 'completed', result: { policy: target, version, skipped: 'the device is already on this policy' } }, tx);
      });
      return;
    }
    const d = await this.deviceCall(() => this.o.amapi.setDevicePolicy(state.name, target));
    this.stats.devicesPatched++;
    await store.transaction(async (tx) => {
      await store.devices.lockDevice(c.deviceId, tx);
      await store.devices.patchEnrollmentState(c.deviceId, { expected: { policyId: p.policyId, version, at: this.now().toISOString() }, policyName: d.policyName ?? target }, tx);
      await store.commands.report(c.uuid, { status: 'completed', result: { policy: target, version } }, tx);
    });
  }

  private async issueCommand(c: Command, state: AndroidEnrollmentState): Promise<void> {
    const { store } = this.o;
    const p = c.payload as IssueCommandPayload;
    const ttl = Math.round((this.o.commandTtlMs ?? 86_400_000) / 1000);
    const op = await this.deviceCall(() =>
      this.o.amapi.issueCommand(state.name, { type: p.type, duration: `${ttl}s`, ...(p.newPassword ? { newPassword: p.newPassword, resetPasswordFlags: ['REQUIRE_ENTRY'] } : {}) }),
    );
    this.stats.commandsIssued++;
    const name = op.name ?? '';
    await store.transaction(async (tx) => {
      if (op.done) {
        await store.commands.report(c.uuid, op.error ? { status: 'failed', error: op.error.message ?? 'the command failed', result: { operation: name } } : { status: 'completed', result: { operation: name } }, tx);
        return;
      }
      // Done when the COMMAND notification says so (status.ts finds the command by operation name).
      await store.devices.lockDevice(c.deviceId, tx);
      const cur = ((await store.devices.getEnrollment(c.deviceId, tx))?.state ?? {}) as Partial<AndroidEnrollmentState>;
      const ops = Object.entries({ ...(cur.operations ?? {}), [name]: c.uuid }).slice(-MAX_OPERATIONS);
      await store.devices.patchEnrollmentState(c.deviceId, { operations: Object.fromEntries(ops) }, tx);
      await store.commands.report(c.uuid, { status: 'acknowledged', result: { operation: name } }, tx);
    });
  }

  private async deleteDevice(c: Command, state: AndroidEnrollmentState): Promise<void> {
    const { store } = this.o;
    const p = c.payload as DeleteDevicePayload;
    let already = false;
    try {
      await this.o.amapi.deleteDevice(state.name, { wipeDataFlags: p.wipeDataFlags ?? [] });
    } catch (e) {
      // Already gone is what was asked for.
      if (!(e instanceof AmapiError && e.status === 404)) throw e;
      already = true;
    }
    this.stats.devicesDeleted++;
    await store.transaction(async (tx) => {
      await store.commands.report(c.uuid, { status: 'completed', result: { deleted: state.name, ...(already ? { already: true } : {}) } }, tx);
      await markDeviceGone(store, c.deviceId, 'the device was wiped (devices.delete)', tx);
    });
  }

  /** The policy of a command: given, or compiled from the stored bundles it names. */
  private policyOf(p: ApplyPolicyPayload): Promise<AmapiPolicy> {
    if (p.policy) return Promise.resolve(p.policy);
    const hashes = p.bundles ?? [];
    if (policyIdFor(hashes) !== p.policyId) return Promise.reject(new AmapiError(`policy ${p.policyId} is not the policy of bundles ${hashes.join(', ') || '(none)'}`, 400));
    let c = this.compiled.get(p.policyId);
    if (!c) {
      c = (async () => {
        const bundles = [];
        for (const hash of hashes) {
          const b = await this.o.store.bundles.get(hash);
          if (!b) throw new AmapiError(`bundle ${hash} of policy ${p.policyId} is not stored`, 400);
          const content = b.content as { name: string; spec: PolicyBundleSpec };
          bundles.push({ name: content.name, hash, spec: content.spec });
        }
        return compileAndroidPolicy(bundles);
      })();
      this.compiled.set(p.policyId, c);
      c.catch(() => this.compiled.delete(p.policyId));
      if (this.compiled.size > 10_000) this.compiled.delete(this.compiled.keys().next().value!);
    }
    return c;
  }

  /** What AMAPI knows of the device now, stored as a status report would be. */
  private async refresh(c: Command, state: AndroidEnrollmentState): Promise<void> {
    const d = await this.deviceCall(() => this.o.amapi.getDevice(state.name));
    const outcome = await recordDeviceStatus(this.o.store, d, { enterprise: this.o.enterprise });
    await this.o.store.commands.report(c.uuid, { status: 'completed', result: { device: state.name, outcome } });
  }

  /** Creates or updates the policy once per process and content, with secrets filled in only now; returns its version. */
  private async ensurePolicy(p: ApplyPolicyPayload): Promise<string> {
    const { policy, missing, values } = resolveSecrets(await this.policyOf(p), this.o.secret);
    if (missing.length) throw new AmapiError(`secret${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not set (policy ${p.policyId})`, 400);
    // The digest of the resolved policy stays in memory only: a rotated secret re-sends the policy.
    const key = `${p.policyId}:${createHash('sha256').update(canonicalize(policy) ?? '').digest('hex')}`;
    let v = this.ensured.get(key);
    if (!v) {
      v = (async () => {
        try {
          const saved = await this.o.amapi.patchPolicy(this.policyName(p.policyId), policy);
          this.stats.policiesPatched++;
          return String(saved.version ?? '0');
        } catch (e) {
          // Google's message may quote a value it refused: never let a secret reach a log or the queue.
          if (e instanceof AmapiError && values.length) throw new AmapiError(scrubSecrets(e.message, values), e.status, e.reason, e.retryAfterMs);
          throw e;
        }
      })();
      this.ensured.set(key, v);
      // A failure is not remembered: the next command tries again.
      v.catch(() => this.ensured.delete(key));
    }
    return v;
  }
}
