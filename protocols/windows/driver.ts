// The Windows PlatformDriver: bundles → CSP nodes (csp.ts), diffed against
// what the device read back, delivered as queued SyncML commands that the
// OMA-DM service sends in the device's next session:
// - install → Replace (Policy CSP, DMClient), or Add for a node the device
//   does not hold yet (418 → Replace in the session); the DeviceLock policies
//   go together in one Atomic, as the Policy CSP requires;
// - remove → Delete (the profile or certificate node for Wi-Fi and root
//   certificates); DMClient poll values cannot be deleted, they are released;
// - after changes one Get reads every changed node back — a policy both at
//   Policy/Config (the value Muster set) and Policy/Result (the value in
//   force, which Group Policy or another MDM may win) — and what it reads
//   becomes reported state (items keyed by LocURI, hashed like compile).
// Secrets are resolved only when the service renders a command for the
// device (renderWindowsCommand), so plans, hashes and the queue never hold them.
import { diffItems, type Action, type AdminAction, type AdminActionContext, type AdminActionResult, type DeliverContext, type DriverDevice, type NativeState, type PlatformDriver, type ReportedItems, type ResolvedBundle } from '../../controller/reconcile/driver.js';
import { REPORTED_ITEMS, commandUuid } from '../../controller/reconcile/reconciler.js';
import { deviceLifecycle } from '../../controller/devices/lifecycle.js';
import type { Command, NewCommand, Queryable, Store } from '../../controller/store/index.js';
import { STATUS_TEXT, isContainer, type CommandOutcome, type CommandSpec, type LeafStatus, type RenderedCommand, type ResultItem } from './syncml/session.js';
import { compileWindowsNodes, cspHash, normalizeValue, policyResultUri, type CspNode, type WindowsCompileOptions } from './csp.js';

export const WINDOWS_COMMAND = {
  install: 'windows.Install',
  remove: 'windows.Remove',
  readBack: 'windows.ReadBack',
  inventory: 'windows.Inventory',
  lock: 'windows.Lock',
  wipe: 'windows.Wipe',
  restart: 'windows.Restart',
} as const;

/** What a node's command means for reported state. */
interface TrackedNode {
  id: string;
  /** The hash the device holds once this lands (install) or is expected to hold (read-back). */
  hash?: string;
  /** The node the read-back Get reads: the value in force (Policy/Result for a policy). */
  read?: string;
  /** A policy's own Policy/Config node, read beside Policy/Result: the value this enrollment set. */
  config?: string;
  verify?: 'value' | 'exists';
  format?: string;
}

/** The payload of every queued Windows command. */
export interface WindowsQueuedCommand {
  kind: 'install' | 'remove' | 'readback' | 'inventory' | 'admin';
  /** The SyncML command, secret references unresolved. */
  spec: CommandSpec;
  nodes?: TrackedNode[];
  /** Status codes that still count as done (a read-back tolerates 404). */
  tolerate?: number[];
  /** Values the device returns are not kept in the queue's history. */
  sensitive?: boolean;
  /** Node data that is an XML document: secrets put into it are XML-escaped (by target). */
  xmlTargets?: string[];
}

export interface WindowsDriverOptions extends WindowsCompileOptions {
  /** Ask devices to start a session (WNS): without it, devices are reached at their next poll. */
  wake?(deviceIds: readonly string[]): Promise<void>;
}

/** What a device is asked about itself: at enrollment, on `muster devices refresh`. */
export const INVENTORY_NODES = [
  './DevInfo/DevId',
  './DevInfo/Man',
  './DevInfo/Mod',
  './DevInfo/DmV',
  './DevInfo/Lang',
  './DevDetail/SwV',
  './DevDetail/HwV',
  './DevDetail/OEM',
  './DevDetail/DevTyp',
  './DevDetail/Ext/Microsoft/DeviceName',
  './DevDetail/Ext/Microsoft/OSPlatform',
  './DevDetail/Ext/Microsoft/SMBIOSSerialNumber',
  './Vendor/MSFT/DMClient/HWDevID',
  './Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance',
];

/** Nodes Windows does not let a server delete: on removal Muster only stops managing them. */
const UNDELETABLE = /^\.\/(Device\/)?Vendor\/MSFT\/DMClient\/Provider\/[^/]+\/Poll\//i;

/** What a removal deletes: the whole Wi-Fi profile or certificate, else the node itself. */
export function deleteTargetFor(id: string): string {
  if (/\/WiFi\/Profile\/[^/]+\/WlanXml$/i.test(id)) return id.slice(0, -'/WlanXml'.length);
  if (/\/RootCATrustedCertificates\/[^/]+\/[0-9A-F]{40}\/EncodedCertificate$/i.test(id)) return id.slice(0, -'/EncodedCertificate'.length);
  return id;
}

/** Where a managed node is read back from when its compiled payload is not at hand (refresh). */
const readUriFor = (id: string) => policyResultUri(id) ?? id;
/** The Policy/Config node read beside Policy/Result, for a policy node. */
const configUriFor = (id: string, read: string) => (policyResultUri(id) === read ? id : undefined);
/** The Get items of a read-back: each node's Config (policies) and value in force. */
const readItems = (nodes: readonly TrackedNode[]) => nodes.flatMap((n) => [...(n.config ? [{ target: n.config }] : []), { target: n.read! }]);
const verifyFor = (id: string): 'value' | 'exists' => (/\/WlanXml$|\/EncodedCertificate$/i.test(id) ? 'exists' : 'value');

export function createWindowsDriver(o: WindowsDriverOptions = {}): PlatformDriver {
  return {
    platform: 'windows',
    compile(bundles: readonly ResolvedBundle[], _device: DriverDevice): NativeState {
      return { platform: 'windows', items: compileWindowsNodes(bundles, o).items };
    },
    diff: diffItems,
    async deliver(ctx: DeliverContext, work: ReadonlyArray<{ device: DriverDevice; actions: readonly Action[] }>): Promise<void> {
      const commands: NewCommand[] = [];
      for (const { device, actions } of work) {
        const nonce = ctx.nonce(device.id);
        const installs = actions.filter((a): a is Extract<Action, { kind: 'install' }> => a.kind === 'install');
        const removes = actions.filter((a): a is Extract<Action, { kind: 'remove' }> => a.kind === 'remove');
        const groups = new Map<string, typeof installs>();
        for (const a of installs) {
          const key = (a.item.payload as CspNode).atomic ?? `node:${a.item.id}`;
          groups.set(key, [...(groups.get(key) ?? []), a]);
        }
        for (const [key, group] of groups) {
          const leaves = group.map((a) => installSpec(a.item.payload as CspNode, a.replaces));
          const spec: CommandSpec = key.startsWith('node:') ? leaves[0]! : { verb: 'Atomic', commands: leaves };
          const nodes = group.map((a) => ({ id: a.item.id, hash: a.item.hash }));
          const xmlTargets = group.filter((a) => (a.item.payload as CspNode).xml).map((a) => a.item.id);
          commands.push({
            uuid: commandUuid(device.id, WINDOWS_COMMAND.install, nodes.map((n) => `${n.id}=${n.hash}`).join('\n'), nonce),
            deviceId: device.id,
            type: WINDOWS_COMMAND.install,
            payload: { kind: 'install', spec, nodes, ...(xmlTargets.length ? { xmlTargets } : {}), ...(group.some((a) => (a.item.payload as CspNode).secret) ? { sensitive: true } : {}) } satisfies WindowsQueuedCommand,
          });
        }
        const released: string[] = [];
        for (const a of removes) {
          if (UNDELETABLE.test(a.id)) {
            released.push(a.id);
            continue;
          }
          // One Delete each, never in an Atomic: a node already gone (404) must not roll the others back.
          commands.push({
            uuid: commandUuid(device.id, WINDOWS_COMMAND.remove, a.id, nonce),
            deviceId: device.id,
            type: WINDOWS_COMMAND.remove,
            payload: { kind: 'remove', spec: { verb: 'Delete', items: [{ target: deleteTargetFor(a.id) }] }, nodes: [{ id: a.id }], tolerate: [404] } satisfies WindowsQueuedCommand,
          });
        }
        if (released.length) await release(ctx.store, device.id, released, ctx.tx);
        const reads = installs.flatMap((a): TrackedNode[] => {
          const n = a.item.payload as CspNode;
          if (!n.read) return [];
          const config = configUriFor(a.item.id, n.read);
          return [{ id: a.item.id, hash: a.item.hash, read: n.read, ...(config ? { config } : {}), verify: n.verify, format: n.format }];
        });
        if (reads.length) {
          commands.push({
            uuid: commandUuid(device.id, WINDOWS_COMMAND.readBack, reads.map((r) => `${r.id}=${r.hash}`).join('\n'), nonce),
            deviceId: device.id,
            type: WINDOWS_COMMAND.readBack,
            payload: { kind: 'readback', spec: { verb: 'Get', items: readItems(reads) }, nodes: reads, tolerate: [404], ...(installs.some((a) => (a.item.payload as CspNode).secret || (a.item.payload as CspNode).verify === 'exists') ? { sensitive: true } : {}) } satisfies WindowsQueuedCommand,
          });
        }
      }
      if (commands.length) await ctx.store.commands.enqueue(commands, ctx.tx);
    },
    ...(o.wake ? { wake: o.wake } : {}),
    adminActions: ['lock', 'wipe', 'restart', 'refresh'],
    adminAction: windowsAdminAction,
  };
}

function installSpec(n: CspNode, replaces: boolean): CommandSpec {
  const verb = n.method === 'replace' || replaces ? 'Replace' : 'Add';
  return { verb, items: [{ target: n.locUri, format: n.format, ...(n.type ? { type: n.type } : {}), ...(n.format === 'node' || n.format === 'null' ? {} : { data: n.value }) }] };
}

/** Stops tracking nodes that cannot be deleted (they keep their last value on the device). */
async function release(store: Store, deviceId: string, ids: readonly string[], tx: Queryable): Promise<void> {
  await deviceLifecycle(store).updateReported<ReportedItems>(
    deviceId,
    REPORTED_ITEMS,
    (prev) => {
      if (!prev) return undefined;
      const items = { ...prev.items };
      for (const id of ids) delete items[id];
      return { items };
    },
    tx,
    { publish: false },
  );
}

const exec = (target: string): CommandSpec => ({ verb: 'Exec', items: [{ target, format: 'null', type: 'text/plain', data: '' }] });

/** The inventory Get, as a queued command (idempotent on `token`). */
export function inventoryCommand(deviceId: string, token: string, priority = 0): NewCommand {
  return { uuid: commandUuid(deviceId, WINDOWS_COMMAND.inventory, token), deviceId, type: WINDOWS_COMMAND.inventory, payload: { kind: 'inventory', spec: { verb: 'Get', items: INVENTORY_NODES.map((target) => ({ target })) }, tolerate: [404] } satisfies WindowsQueuedCommand, priority };
}

async function windowsAdminAction(ctx: AdminActionContext, device: DriverDevice, action: AdminAction): Promise<AdminActionResult> {
  const one = (type: string, spec: CommandSpec): NewCommand => ({ uuid: commandUuid(device.id, 'admin', type, ctx.requestId), deviceId: device.id, type, payload: { kind: 'admin', spec } satisfies WindowsQueuedCommand, priority: 50 });
  let commands: NewCommand[];
  switch (action.kind) {
    case 'lock':
      commands = [one(WINDOWS_COMMAND.lock, exec('./Vendor/MSFT/RemoteLock/Lock'))];
      break;
    case 'wipe':
      commands = [one(WINDOWS_COMMAND.wipe, exec('./Device/Vendor/MSFT/RemoteWipe/doWipe'))];
      break;
    case 'restart':
      commands = [one(WINDOWS_COMMAND.restart, exec('./Device/Vendor/MSFT/Reboot/RebootNow'))];
      break;
    default: {
      // refresh: what the device is, and every managed node read back again.
      commands = [inventoryCommand(device.id, `admin:${ctx.requestId}`, 10)];
      const held = (await ctx.store.devices.reportedMany([device.id], REPORTED_ITEMS, ctx.tx)).get(device.id)?.state as ReportedItems | undefined;
      const ids = Object.keys(held?.items ?? {}).sort();
      const nodes = ids.map((id): TrackedNode => {
        const read = readUriFor(id);
        const config = configUriFor(id, read);
        return { id, read, ...(config ? { config } : {}), verify: verifyFor(id) };
      });
      if (ids.length) {
        commands.push({
          uuid: commandUuid(device.id, 'admin', WINDOWS_COMMAND.readBack, ctx.requestId),
          deviceId: device.id,
          type: WINDOWS_COMMAND.readBack,
          payload: { kind: 'readback', spec: { verb: 'Get', items: readItems(nodes) }, nodes, tolerate: [404], sensitive: true } satisfies WindowsQueuedCommand,
          priority: 10,
        });
      }
    }
  }
  await ctx.store.commands.enqueue(commands, ctx.tx);
  return { commands: commands.map((c) => c.uuid) };
}

const SECRET_REF = /\$\{secret:([A-Za-z_][A-Za-z0-9_.-]*)\}/g;
const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');

/** A queued Windows command → the SyncML command sent; secrets resolved only now (XML-escaped inside XML documents). */
export function renderWindowsCommand(cmd: Command, o: { secret(name: string): string | undefined }): RenderedCommand {
  const p = cmd.payload as Partial<WindowsQueuedCommand> | null;
  if (!p || !p.spec || !p.kind) throw new Error(`${cmd.type} is not a Windows command`);
  const xml = new Set(p.xmlTargets ?? []);
  const missing = new Set<string>();
  const resolve = (spec: CommandSpec): CommandSpec => {
    if (isContainer(spec)) return { verb: spec.verb, commands: spec.commands.map(resolve) };
    const items = spec.items.map((it) => {
      if (!('data' in it) || it.data === undefined || !it.data.includes('${secret:')) return it;
      const data = it.data.replace(SECRET_REF, (_m: string, name: string) => {
        const v = o.secret(name);
        if (v === undefined) {
          missing.add(name);
          return '';
        }
        return xml.has(it.target) ? xmlEscape(v) : v;
      });
      return { ...it, data };
    });
    return { ...spec, items } as CommandSpec;
  };
  const spec = resolve(p.spec);
  if (missing.size) throw new Error(`secret${missing.size > 1 ? 's' : ''} ${[...missing].join(', ')} not set`);
  return { spec, ...(p.tolerate ? { tolerate: p.tolerate } : {}) };
}

const statusText = (s: LeafStatus) => `${s.verb}: ${s.code} ${STATUS_TEXT[s.code] ?? 'failed'}`;
const sameUri = (a: string, b: string) => a.replace(/^\.\/Device\/Vendor\//i, './Vendor/').toLowerCase() === b.replace(/^\.\/Device\/Vendor\//i, './Vendor/').toLowerCase();

/**
 * Finished Windows commands → reported state: install outcomes at once,
 * Delete outcomes, and read-back values as the truth for the nodes read.
 * Publishes device.reported (in the same transaction) so the reconciler
 * recomputes sync state and repairs drift.
 */
export async function recordWindowsResults(store: Store, deviceId: string, done: ReadonlyArray<{ command: Command; outcome: CommandOutcome }>, tx: Queryable): Promise<void> {
  const lifecycle = deviceLifecycle(store);
  await lifecycle.updateReported<ReportedItems>(deviceId, REPORTED_ITEMS, (prev) => itemsAfter(prev, done), tx);
  const wiped = done.find(({ command, outcome }) => command.type === WINDOWS_COMMAND.wipe && outcome.statuses.some((s) => s.code >= 200 && s.code < 300));
  if (wiped) {
    // The PC accepted doWipe: it resets itself and comes back, if at all, as a new enrollment.
    await lifecycle.unenroll(deviceId, { platform: 'windows', by: 'wipe', reason: 'the device confirmed the wipe (RemoteWipe/doWipe accepted)', actor: `device:${deviceId}`, action: 'device.wiped', details: { command: wiped.command.uuid } }, tx);
  }
}

/** Reported items after these results: undefined when nothing changed. */
function itemsAfter(prev: ReportedItems | undefined, done: ReadonlyArray<{ command: Command; outcome: CommandOutcome }>): ReportedItems | undefined {
  const items: ReportedItems['items'] = { ...(prev?.items ?? {}) };
  let changed = false;
  for (const { command, outcome } of done) {
    const p = command.payload as WindowsQueuedCommand;
    if (!p?.nodes) continue;
    if (p.kind === 'install') {
      for (const n of p.nodes) {
        const leaf = outcome.statuses.find((s) => s.targets.some((t) => sameUri(t, n.id)));
        if (!leaf || !n.hash) continue;
        const ok = leaf.code >= 200 && leaf.code < 300 && leaf.code !== 215 && leaf.code !== 216;
        items[n.id] = ok ? { hash: n.hash, status: 'installed' } : { hash: n.hash, status: 'failed', error: leaf.code === 216 ? `rolled back: ${outcome.error ?? 'another node in the Atomic failed'}` : statusText(leaf) };
        changed = true;
      }
    } else if (p.kind === 'remove') {
      for (const n of p.nodes) {
        const leaf = outcome.statuses[0];
        // Gone, already gone, or not deletable on this device (405): no longer Muster's.
        if (leaf && (leaf.code === 200 || leaf.code === 404 || leaf.code === 405)) {
          delete items[n.id];
          changed = true;
        }
      }
    } else if (p.kind === 'readback') {
      const single = outcome.statuses.filter((s) => !s.targetRefs);
      const result = (uri: string) => outcome.results.find((x) => sameUri(x.source, uri));
      // A value came back: the node is there, whatever one Status said for a Get of several nodes.
      const codeOf = (uri: string) => (result(uri) ? 200 : (outcome.statuses.find((s) => s.targetRefs?.some((t) => sameUri(t, uri))) ?? single[0])?.code);
      const hashOf = (n: TrackedNode, r: ResultItem) => {
        const format = n.format ?? r.format ?? 'chr';
        return cspHash(format, normalizeValue(format, r.data ?? ''));
      };
      for (const n of p.nodes) {
        if (!n.read) continue;
        const cur = items[n.id];
        const failedHere = cur && cur.status === 'failed' && cur.hash === n.hash;
        const gone = () => {
          // The device took this very content (200) but cannot read it back (ADMX-backed policies, CSPs
          // without Get): what it accepted stands. Deleting it would reinstall it at every poll.
          if (n.hash && cur?.hash === n.hash) return;
          // Not on the device (deleted behind our back, or never set): drift, for the reconciler to repair.
          if (cur) {
            delete items[n.id];
            changed = true;
          }
        };
        const set = (v: ReportedItems['items'][string]) => {
          items[n.id] = v;
          changed = true;
        };
        const inForce = result(n.read);
        const mine = n.config ? result(n.config) : undefined;
        if ((n.verify ?? 'value') === 'exists') {
          const code = codeOf(n.read);
          if (code === 404) gone();
          // Present: what was installed stays (Wi-Fi profiles and certificates read back reformatted).
          else if (code === 200 && inForce && !cur) set({ hash: 'present', status: 'installed' });
          continue;
        }
        if (n.config && (mine || codeOf(n.config) === 404)) {
          // A policy: Policy/Config says what this enrollment set, Policy/Result what is in force.
          if (!mine) {
            gone();
            continue;
          }
          if (failedHere) continue;
          const setHash = hashOf(n, mine);
          // Another value than the one just sent (or found by a refresh): drift, for the reconciler to repair.
          if (n.hash && setHash !== n.hash) set({ hash: setHash, status: 'installed' });
          else if (inForce && hashOf(n, inForce) !== setHash) {
            // Set, but another source wins (Group Policy, a conflicting MDM): say so, do not loop.
            set({ hash: setHash, status: 'failed', error: `set, but ${n.read} reads back ${JSON.stringify((inForce.data ?? '').slice(0, 80))}` });
          } else set({ hash: setHash, status: 'installed' });
          continue;
        }
        const code = codeOf(n.read);
        if (code === 404) {
          gone();
          continue;
        }
        if (code !== 200 || !inForce || failedHere) continue;
        const read = hashOf(n, inForce);
        if (n.hash && read !== n.hash && cur?.hash === n.hash && cur.status === 'installed') {
          // The device took the value but another source wins (Group Policy, a conflicting MDM): say so, do not loop.
          set({ hash: n.hash, status: 'failed', error: `set, but ${n.read} reads back ${JSON.stringify((inForce.data ?? '').slice(0, 80))}` });
        } else set({ hash: read, status: 'installed' });
      }
    }
  }
  return changed ? { items } : undefined;
}

/**
 * Queues the inventory Get once per enrollment (when the device has never
 * answered one) and again once the last answer is older than `maxAgeMs`:
 * the service's onSessionStart hook.
 */
export function windowsInventoryOnSession(store: Store, o: { maxAgeMs?: number; now?: () => Date } = {}) {
  const maxAge = o.maxAgeMs ?? 24 * 3_600_000;
  return async (deviceId: string, tx: Queryable): Promise<void> => {
    const now = (o.now ?? (() => new Date()))();
    const asked = await deviceLifecycle(store).updateReported<{ askedAt?: string }>(
      deviceId,
      INVENTORY_REPORT,
      (last) => (last?.askedAt && now.getTime() - Date.parse(last.askedAt) < maxAge ? undefined : { askedAt: now.toISOString() }),
      tx,
      { at: now },
    );
    if (asked) await store.commands.enqueue(inventoryCommand(deviceId, `auto:${Math.floor(now.getTime() / maxAge)}`, 10), tx);
  };
}

/** The reported-state kind that remembers when the inventory was last asked for. */
export const INVENTORY_REPORT = 'windows.inventory';
