// Rollout status, one row per revision: a new revision starts when the
// rollout's bundle changes, with the previous bundle as stable and the new one
// as canary. The rollout engine computes status; this only keeps it.
import type { Db, Queryable } from './db.js';

export type RolloutPhase = 'Progressing' | 'Paused' | 'Healthy' | 'Degraded';

/** A Kubernetes-style condition. */
export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface RolloutRevision {
  name: string;
  revision: number;
  stableHash: string | null;
  canaryHash: string;
  currentStep: number;
  /** Percent of devices on the canary. */
  weight: number;
  phase: RolloutPhase;
  conditions: Condition[];
  observedGeneration: number;
  stepStartedAt: Date;
  paused: boolean;
  aborted: boolean;
  message: string;
  /** The bundle name, and the rollout spec this revision last ran under. */
  bundle: string;
  spec: unknown;
  /** Device counts by sync state and bundle, kept by the reconciler. */
  counts: Record<string, number>;
  /** The rollout is gone from the source (its devices are being pruned). */
  deleted: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export interface RolloutStatusPatch {
  currentStep?: number;
  weight?: number;
  phase?: RolloutPhase;
  conditions?: Condition[];
  observedGeneration?: number;
  stepStartedAt?: Date;
  paused?: boolean;
  aborted?: boolean;
  message?: string;
  spec?: unknown;
  counts?: Record<string, number>;
  deleted?: boolean;
}

export interface RolloutStore {
  /** Starts revision (latest + 1) at step 0, weight 0, Progressing. */
  startRevision(
    r: { name: string; stableHash: string | null; canaryHash: string; bundle?: string; spec?: unknown; observedGeneration?: number } & RolloutStatusPatch,
    q?: Queryable,
  ): Promise<RolloutRevision>;
  /** The latest revision. */
  current(name: string, q?: Queryable): Promise<RolloutRevision | undefined>;
  get(name: string, revision: number, q?: Queryable): Promise<RolloutRevision | undefined>;
  /** The latest revision of every rollout, by name. */
  list(): Promise<RolloutRevision[]>;
  /** Every revision, newest first. */
  history(name: string): Promise<RolloutRevision[]>;
  updateStatus(name: string, revision: number, patch: RolloutStatusPatch, q?: Queryable): Promise<RolloutRevision | undefined>;
}

interface RolloutRow {
  name: string;
  revision: number;
  stable_hash: string | null;
  canary_hash: string;
  current_step: number;
  weight: number;
  phase: RolloutPhase;
  conditions: Condition[];
  observed_generation: number;
  step_started_at: Date;
  paused: boolean;
  aborted: boolean;
  message: string;
  bundle: string;
  spec: unknown;
  counts: Record<string, number>;
  deleted: boolean;
  created_at: Date;
  updated_at: Date;
}

const toRevision = (r: RolloutRow): RolloutRevision => ({
  name: r.name,
  revision: r.revision,
  stableHash: r.stable_hash,
  canaryHash: r.canary_hash,
  currentStep: r.current_step,
  weight: r.weight,
  phase: r.phase,
  conditions: r.conditions,
  observedGeneration: r.observed_generation,
  stepStartedAt: r.step_started_at,
  paused: r.paused,
  aborted: r.aborted,
  message: r.message,
  bundle: r.bundle,
  spec: r.spec,
  counts: r.counts,
  deleted: r.deleted,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export function createRolloutStore(db: Db): RolloutStore {
  const one = (r: { rows: RolloutRow[] }) => (r.rows[0] ? toRevision(r.rows[0]) : undefined);
  return {
    async startRevision(s, q = db) {
      const r = await q.query<RolloutRow>(
        `INSERT INTO rollouts (name, revision, stable_hash, canary_hash, observed_generation, bundle, spec)
         SELECT $1, COALESCE(max(revision), 0) + 1, $2, $3, $4, $5, $6::text::jsonb FROM rollouts WHERE name = $1
         RETURNING *`,
        [s.name, s.stableHash, s.canaryHash, s.observedGeneration ?? 0, s.bundle ?? '', JSON.stringify(s.spec ?? {})],
      );
      const row = toRevision(r.rows[0]!);
      const { name: _n, stableHash: _s, canaryHash: _c, bundle: _b, spec: _sp, observedGeneration: _g, ...patch } = s;
      if (Object.keys(patch).length === 0) return row;
      return (await this.updateStatus(row.name, row.revision, patch, q))!;
    },

    async current(name, q = db) {
      return one(await q.query<RolloutRow>('SELECT * FROM rollouts WHERE name = $1 ORDER BY revision DESC LIMIT 1', [name]));
    },

    async get(name, revision, q = db) {
      return one(await q.query<RolloutRow>('SELECT * FROM rollouts WHERE name = $1 AND revision = $2', [name, revision]));
    },

    async list() {
      const r = await db.reader.query<RolloutRow>('SELECT DISTINCT ON (name) * FROM rollouts ORDER BY name, revision DESC');
      return r.rows.map(toRevision);
    },

    async history(name) {
      const r = await db.reader.query<RolloutRow>('SELECT * FROM rollouts WHERE name = $1 ORDER BY revision DESC', [name]);
      return r.rows.map(toRevision);
    },

    async updateStatus(name, revision, p, q = db) {
      return one(
        await q.query<RolloutRow>(
          `UPDATE rollouts SET
             current_step        = COALESCE($3, current_step),
             weight              = COALESCE($4, weight),
             phase               = COALESCE($5, phase),
             conditions          = COALESCE($6::text::jsonb, conditions),
             observed_generation = COALESCE($7, observed_generation),
             step_started_at     = COALESCE($8::timestamptz, step_started_at),
             paused              = COALESCE($9, paused),
             aborted             = COALESCE($10, aborted),
             message             = COALESCE($11, message),
             spec                = COALESCE($12::text::jsonb, spec),
             counts              = COALESCE($13::text::jsonb, counts),
             deleted             = COALESCE($14, deleted),
             updated_at          = now()
           WHERE name = $1 AND revision = $2
           RETURNING *`,
          [
            name,
            revision,
            p.currentStep ?? null,
            p.weight ?? null,
            p.phase ?? null,
            p.conditions === undefined ? null : JSON.stringify(p.conditions),
            p.observedGeneration ?? null,
            p.stepStartedAt ?? null,
            p.paused ?? null,
            p.aborted ?? null,
            p.message ?? null,
            p.spec === undefined ? null : JSON.stringify(p.spec),
            p.counts === undefined ? null : JSON.stringify(p.counts),
            p.deleted ?? null,
          ],
        ),
      );
    },
  };
}
