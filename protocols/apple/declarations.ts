// Declarative Device Management, where it fits better than a profile: a
// required OS version by a deadline (com.apple.configuration.softwareupdate.
// enforcement.specific) is something no profile can say. Pure: bundles →
// configuration declarations; the set a device holds → the documents its
// DeclarativeManagement check-ins fetch (tokens, declaration-items, each
// declaration); a status report → what it says about each configuration.
//
// Each configuration is one driver item, `ddm:<Identifier>`, whose hash is its
// ServerToken (a digest of the whole declaration), so a status report that
// names the server-token it applied is directly reported state.
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { NativeItem, ResolvedBundle } from '../../controller/reconcile/driver.js';
import type { AppleFamily } from './profiles.js';
import { PROFILE_ID_PREFIX } from './profiles.js';

export const DDM_ITEM_PREFIX = 'ddm:';

export interface Declaration {
  Type: string;
  Identifier: string;
  ServerToken: string;
  Payload: Record<string, unknown>;
}

/** Oldest OS that applies softwareupdate.enforcement.specific. */
const ENFORCEMENT_SINCE: Partial<Record<AppleFamily, number>> = { macos: 14, ios: 17, ipados: 17, visionos: 1 };

const digest = (v: unknown) => createHash('sha256').update(canonicalize(v)!).digest('hex');

/** A declaration with its ServerToken computed over everything else in it. */
export function declaration(type: string, identifier: string, payload: Record<string, unknown>): Declaration {
  return { Type: type, Identifier: identifier, ServerToken: digest({ Type: type, Identifier: identifier, Payload: payload }).slice(0, 32), Payload: payload };
}

/** RFC 3339 → the "YYYY-MM-DDTHH:MM:SS" Apple wants, in UTC (the device reads it as its local time). */
function localDateTime(rfc3339: string): string | undefined {
  const t = Date.parse(rfc3339);
  return Number.isNaN(t) ? undefined : new Date(t).toISOString().slice(0, 19);
}

/** The configuration declarations a device should hold, as driver items; none for an unknown family or an OS too old to apply them. */
export function compileDeclarations(bundles: readonly ResolvedBundle[], family: AppleFamily | undefined, osVersion: string | null): NativeItem[] {
  const items: NativeItem[] = [];
  const major = osVersion ? Number(osVersion.split('.')[0]) : undefined;
  for (const b of bundles) {
    if (b.spec.platforms && !b.spec.platforms.includes('apple')) continue;
    const u = b.spec.settings?.osUpdates;
    if (!u?.minimumVersion || !u.deadline) continue;
    const target = family ? u.minimumVersion[family as 'macos'] : undefined;
    const since = family ? ENFORCEMENT_SINCE[family] : undefined;
    if (!target || since === undefined || (major !== undefined && !Number.isNaN(major) && major < since)) continue;
    const when = localDateTime(u.deadline);
    if (!when) continue;
    const d = declaration('com.apple.configuration.softwareupdate.enforcement.specific', `${PROFILE_ID_PREFIX}${b.name}.softwareupdate`, { TargetOSVersion: target, TargetLocalDateTime: when });
    items.push({ id: `${DDM_ITEM_PREFIX}${d.Identifier}`, hash: d.ServerToken, sources: [b.hash], summary: `declaration ${d.Identifier} (OS ${target} by ${when})`, payload: d });
  }
  return items.sort((a, b) => a.id.localeCompare(b.id));
}

/** Status items Muster subscribes to, so devices report them without being asked. */
export const STATUS_SUBSCRIPTIONS = ['device.operating-system.version', 'device.operating-system.build-version', 'softwareupdate.install-state', 'softwareupdate.pending-version', 'softwareupdate.failure-reason'];

/** Everything a device's DeclarativeManagement check-ins can fetch, for the configurations it should hold. */
export interface DeclarationSet {
  token: string;
  /** declaration-items */
  items: { Declarations: { Activations: Ref[]; Configurations: Ref[]; Assets: Ref[]; Management: Ref[] }; DeclarationsToken: string };
  /** "configuration/<id>" / "activation/<id>" → the declaration. */
  byPath: Map<string, Declaration>;
}
type Ref = { Identifier: string; ServerToken: string };

/**
 * The served set: the given configurations, plus a status subscription and
 * one activation that turns them all on (a configuration does nothing until
 * an activation names it). Empty when there are no configurations.
 */
export function declarationSet(configurations: readonly Declaration[]): DeclarationSet {
  const configs = [...configurations];
  if (configs.length) configs.push(declaration('com.apple.configuration.management.status-subscriptions', 'dev.muster.status-subscriptions', { StatusItems: STATUS_SUBSCRIPTIONS.map((Name) => ({ Name })) }));
  configs.sort((a, b) => a.Identifier.localeCompare(b.Identifier));
  const activations = configs.length ? [declaration('com.apple.activation.simple', 'dev.muster.activation', { StandardConfigurations: configs.map((c) => c.Identifier) })] : [];
  const ref = (d: Declaration): Ref => ({ Identifier: d.Identifier, ServerToken: d.ServerToken });
  const token = digest([...configs, ...activations].map(ref)).slice(0, 32);
  const byPath = new Map<string, Declaration>();
  for (const c of configs) byPath.set(`configuration/${c.Identifier}`, c);
  for (const a of activations) byPath.set(`activation/${a.Identifier}`, a);
  return { token, items: { Declarations: { Activations: activations.map(ref), Configurations: configs.map(ref), Assets: [], Management: [] }, DeclarationsToken: token }, byPath };
}

export interface DeclarationStatus {
  identifier: string;
  active: boolean;
  valid: string;
  serverToken: string;
  reasons: string[];
}

/** The configurations part of a status report (StatusItems.management.declarations), bounded; undefined when the report has none. */
export function configurationStatuses(report: unknown): DeclarationStatus[] | undefined {
  const list = (report as { StatusItems?: { management?: { declarations?: { configurations?: unknown } } } } | null)?.StatusItems?.management?.declarations?.configurations;
  if (!Array.isArray(list)) return undefined;
  const out: DeclarationStatus[] = [];
  for (const x of list.slice(0, 1000)) {
    if (typeof x !== 'object' || x === null) continue;
    const d = x as Record<string, unknown>;
    if (typeof d.identifier !== 'string' || typeof d['server-token'] !== 'string') continue;
    const reasons = Array.isArray(d.reasons)
      ? d.reasons.slice(0, 10).map((r) => {
          const o = (r ?? {}) as { code?: unknown; description?: unknown };
          return [o.code, o.description].filter((v) => typeof v === 'string').join(': ');
        })
      : [];
    out.push({ identifier: d.identifier, active: d.active === true, valid: typeof d.valid === 'string' ? d.valid : 'unknown', serverToken: d['server-token'], reasons });
  }
  return out;
}
