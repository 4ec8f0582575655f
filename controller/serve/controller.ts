// The controller process's loop: source → validate → apply → reconcile, plus
// the timers (tick, full resync, queue sweep) and the event consumer that
// turns device reports into incremental reconciles. It owns no state of its
// own beyond what it reads back from the store at start.
import { countErrors, type Diagnostic } from '../policy/diagnostics.js';
import type { KnownBundleVersion } from '../policy/immutability.js';
import { createSchemaValidator, type SchemaValidator } from '../policy/schema-check.js';
import { validatePolicyFiles, type SourceFile } from '../policy/validate.js';
import type { Log, Reconciler } from '../reconcile/reconciler.js';
import type { PolicySource } from '../sources/source.js';
import type { Consumer, Store } from '../store/index.js';

/** Where commit statuses go (GitHub, or nowhere). */
export interface CommitReporter {
  setStatus(sha: string, context: string, state: 'pending' | 'success' | 'failure' | 'error', description: string): Promise<unknown>;
}

export interface ControllerOptions {
  store: Store;
  source: PolicySource;
  reconciler: Reconciler;
  log: Log;
  reporter?: CommitReporter;
  /** How often rollouts are evaluated and paced fan-out continues. */
  tickMs?: number;
  /** How often everything is recomputed from the tables. */
  resyncMs?: number;
}

export interface SourceStatus {
  source: string;
  applied?: { commit: string; appliedAt: string };
  refused?: { commit: string; refusedAt: string; errors: number; messages: string[] };
}

const APPLIED_FILES = 'applied.files';

export class Controller {
  private readonly o: ControllerOptions;
  private readonly schema: SchemaValidator = createSchemaValidator();
  private readonly timers = new Set<NodeJS.Timeout>();
  private consumer: Consumer | undefined;
  private lastRolloutStatus = '';
  private stopped = false;
  ready = false;

  constructor(o: ControllerOptions) {
    this.o = o;
  }

  async start(): Promise<void> {
    const { store, reconciler, log, source } = this.o;
    await reconciler.load();
    // Restore the policy in force before looking at the source: a bad head must not leave us with nothing.
    const applied = await store.sourceState.get<{ commit: string }>('applied');
    const files = await store.sourceState.get<SourceFile[]>(APPLIED_FILES);
    if (applied && files) {
      const r = validatePolicyFiles(files, [], { schemaValidator: this.schema });
      if (r.ok) {
        await reconciler.applyPolicy(r.policySet, applied.commit);
        log.info('restored the policy in force', { commit: applied.commit, devices: reconciler.deviceCount() });
      }
    }
    this.consumer = await store.events.consume({
      name: 'reconciler',
      topics: ['device.reported', 'device.changed'],
      from: 'latest',
      handler: async (events) => {
        for (const e of events) {
          const id = (e.payload as { deviceId?: string }).deviceId;
          if (!id) continue;
          if (e.topic === 'device.changed' && (e.payload as { enrolled?: boolean }).enrolled) await reconciler.deviceEnrolled(id);
          else if (e.topic === 'device.changed') await reconciler.deviceChanged(id);
          else await reconciler.deviceReported(id);
        }
      },
    });
    source.start((commit) => this.onCommit(commit));
    this.every(this.o.tickMs ?? 5_000, async () => {
      const r = await reconciler.tick();
      if (r.changed || r.deferred) log.info('reconciled', { devicesChanged: r.changed, deferredByPacing: r.deferred });
      await this.reportRollouts();
    });
    this.every(this.o.resyncMs ?? 600_000, async () => {
      await reconciler.load();
      const r = await reconciler.tick({ pace: true });
      log.info('full resync', { devices: reconciler.deviceCount(), devicesChanged: r.changed });
    });
    this.every(5_000, () => store.commands.sweep());
    this.ready = true;
  }

  /** A new commit from the source: validate it exactly as `muster validate` does, apply it only if valid. */
  async onCommit(commit: string): Promise<void> {
    const { store, source, reconciler, log, reporter } = this.o;
    const applied = await store.sourceState.get<{ commit: string }>('applied');
    if (applied?.commit === commit && reconciler.policySet) return;
    const read = await source.read(commit);
    const known: KnownBundleVersion[] = (await store.bundles.list({ limit: 1_000_000 })).map((b) => ({
      name: b.name,
      version: b.version,
      hash: b.hash,
      seenAt: `commit ${b.firstCommit?.slice(0, 12) ?? 'applied earlier'}`,
    }));
    const r = validatePolicyFiles(read.files, read.diagnostics, { schemaValidator: this.schema, previous: known });
    if (!r.ok) {
      const errors = r.diagnostics.filter((d) => d.severity === 'error');
      const messages = errors.slice(0, 20).map(formatDiagnostic);
      await store.sourceState.set('refused', { commit, refusedAt: new Date().toISOString(), errors: countErrors(r.diagnostics), messages });
      await store.audit.append({ actor: 'controller', action: 'policy.refuse', subject: `commit/${commit}`, details: { errors: errors.length, messages } });
      log.warn('commit refused: the policy is invalid; the last good commit stays in force', { commit, errors: errors.length, first: messages[0], inForce: applied?.commit });
      await reporter?.setStatus(commit, 'muster/validate', 'failure', `${errors.length} error(s): ${messages[0] ?? ''}`).catch((e: Error) => log.warn('commit status failed', { error: e.message }));
      return;
    }
    const changed = await reconciler.applyPolicy(r.policySet, commit);
    await store.sourceState.set(APPLIED_FILES, read.files);
    log.info('commit applied', { commit, bundles: r.stats.bundles, groups: r.stats.groups, rollouts: r.stats.rollouts, rolloutsChanged: changed });
    await reporter?.setStatus(commit, 'muster/validate', 'success', `valid: ${r.stats.bundles} bundles, ${r.stats.groups} groups, ${r.stats.rollouts} rollouts`).catch((e: Error) => log.warn('commit status failed', { error: e.message }));
    const t = await reconciler.tick({ rollouts: changed });
    log.info('reconciled', { devicesChanged: t.changed, deferredByPacing: t.deferred });
    await this.reportRollouts();
  }

  /** Fetch now (webhook): the source calls onCommit when the head moved. */
  async syncNow(): Promise<void> {
    await this.o.source.trigger();
  }

  async status(): Promise<SourceStatus> {
    const applied = await this.o.store.sourceState.get<SourceStatus['applied']>('applied');
    const refused = await this.o.store.sourceState.get<SourceStatus['refused']>('refused');
    return { source: this.o.source.description, ...(applied ? { applied } : {}), ...(refused ? { refused } : {}) };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    await this.o.source.stop();
    await this.consumer?.stop();
  }

  /** `muster/rollout` on the applied commit: pending while anything moves, failure when degraded. */
  private async reportRollouts(): Promise<void> {
    const { reporter, reconciler, store, log } = this.o;
    if (!reporter) return;
    const applied = await store.sourceState.get<{ commit: string }>('applied');
    if (!applied) return;
    const live = reconciler.rolloutStatuses().filter((r) => !r.deleted);
    const text = live.map((r) => `${r.name} ${r.phase} ${r.weight}%`).join(', ');
    const key = `${applied.commit}|${text}`;
    if (key === this.lastRolloutStatus) return;
    this.lastRolloutStatus = key;
    const state = live.some((r) => r.phase === 'Degraded') ? 'failure' : live.every((r) => r.phase === 'Healthy') ? 'success' : 'pending';
    await reporter.setStatus(applied.commit, 'muster/rollout', state, text || 'no rollouts').catch((e: Error) => log.warn('commit status failed', { error: e.message }));
  }

  private every(ms: number, fn: () => Promise<unknown>): void {
    const loop = () => {
      if (this.stopped) return;
      const t = setTimeout(() => {
        this.timers.delete(t);
        fn()
          .catch((e: Error) => this.o.log.error('background task failed', { error: e.message }))
          .finally(loop);
      }, ms);
      this.timers.add(t);
    };
    loop();
  }
}

export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.column}: ${d.message}`;
}
