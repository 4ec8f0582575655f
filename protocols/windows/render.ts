// What a bundle becomes on Windows devices: the SyncML commands a device
// with nothing installed would receive, as `muster render BUNDLE --platform
// windows` prints them. Secret references stay references.
import { bundleHash } from '../../controller/policy/hash.js';
import type { PolicyBundle } from '../../controller/policy/types.js';
import type { ResolvedBundle } from '../../controller/reconcile/driver.js';
import { compileWindowsNodes, type CspNode, type WindowsCompileOptions } from './csp.js';
import { Composer, newSession, type CommandSpec } from './syncml/session.js';

export interface WindowsRendering {
  /** One line per node: format, LocURI and value (or its size). */
  nodes: Array<{ locUri: string; format: string; summary: string }>;
  /** Vocabulary nodes a raw spec.windows.settings entry replaced. */
  overridden: string[];
  /** The commands as one SyncML message body (SyncHdr for a placeholder device). */
  syncml: string;
}

/** undefined when the bundle has nothing for Windows. */
export function renderWindows(bundle: PolicyBundle | Pick<ResolvedBundle, 'name' | 'hash' | 'spec'>, opts: WindowsCompileOptions & { serverUrl?: string } = {}): WindowsRendering | undefined {
  const b = 'metadata' in bundle ? { name: bundle.metadata.name, hash: bundleHash(bundle.metadata.name, bundle.spec), spec: bundle.spec } : bundle;
  const { items, overridden } = compileWindowsNodes([b], opts);
  if (!items.length) return undefined;
  const atomic: CommandSpec[] = [];
  const single: CommandSpec[] = [];
  for (const it of items) {
    const n = it.payload as CspNode;
    const leaf: CommandSpec = { verb: n.method === 'replace' ? 'Replace' : 'Add', items: [{ target: n.locUri, format: n.format, ...(n.type ? { type: n.type } : {}), ...(n.format === 'node' || n.format === 'null' ? {} : { data: n.value }) }] };
    (n.atomic ? atomic : single).push(leaf);
  }
  const session = newSession({ sessionId: '1', version: '1.2', device: '{DeviceID}', maxMsgSize: Number.MAX_SAFE_INTEGER });
  const c = new Composer(session, [], opts.serverUrl ?? 'https://muster.example/ManagementServer/MDM.svc', { maxCommands: Number.MAX_SAFE_INTEGER });
  let n = 0;
  if (atomic.length) c.add(`render-${n++}`, { spec: { verb: 'Atomic', commands: atomic } });
  for (const s of single) c.add(`render-${n++}`, { spec: s });
  return { nodes: items.map((i) => ({ locUri: i.id, format: (i.payload as CspNode).format, summary: i.summary })), overridden, syncml: c.finish().xml };
}
