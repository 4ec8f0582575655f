// A simulated Windows management tree: the nodes a PC's OMA-DM client
// exposes, with the behaviour the CSP reference documents — Add on an
// existing node is 418, writing a read-only node 405, an unknown path 404,
// Policy/Config values reflected in Policy/Result, deleting an interior node
// takes its subtree. Tests configure nodes that fail inside an Atomic.
export interface TreeNode {
  format: string;
  value: string;
  readOnly?: boolean;
}

/** CSP roots the simulated PC knows; anything else is 404. */
const ROOTS = [
  './vendor/msft/policy/config/',
  './vendor/msft/policy/result/',
  './vendor/msft/bitlocker/',
  './vendor/msft/wifi/profile/',
  './vendor/msft/rootcatrustedcertificates/',
  './vendor/msft/dmclient/',
  './vendor/msft/devicestatus/',
  './devinfo/',
  './devdetail/',
];

/** Executable nodes and what running them does. */
export type ExecAction = 'lock' | 'wipe' | 'reboot';
const EXECS: Record<string, ExecAction> = {
  './vendor/msft/remotelock/lock': 'lock',
  './vendor/msft/remotewipe/dowipe': 'wipe',
  './vendor/msft/remotewipe/dowipeprotected': 'wipe',
  './vendor/msft/reboot/rebootnow': 'reboot',
};

/** ./Device/Vendor/… and ./Vendor/… name the same device-scoped node; names are case-insensitive. */
export const keyOf = (uri: string) => uri.replace(/^\.\/Device\/Vendor\//i, './Vendor/').toLowerCase();

const CONFIG = './vendor/msft/policy/config/';
const RESULT = './vendor/msft/policy/result/';
/** Nodes a Replace may create (the Policy CSP and the value nodes of BitLocker and DMClient); others need Add. */
const REPLACE_CREATES = [CONFIG, './vendor/msft/bitlocker/', './vendor/msft/dmclient/'];

export class ManagementTree {
  private nodes = new Map<string, TreeNode & { uri: string }>();

  constructor(init: Record<string, TreeNode | string> = {}) {
    for (const [uri, n] of Object.entries(init)) this.set(uri, typeof n === 'string' ? { format: 'chr', value: n } : n);
  }

  set(uri: string, n: TreeNode): void {
    const k = keyOf(uri);
    this.nodes.set(k, { ...n, uri });
    if (k.startsWith(CONFIG)) this.nodes.set(RESULT + k.slice(CONFIG.length), { format: n.format, value: n.value, readOnly: true, uri: uri.replace(/Policy\/Config\//i, 'Policy/Result/') });
  }

  get(uri: string): TreeNode | undefined {
    return this.nodes.get(keyOf(uri));
  }

  has(uri: string): boolean {
    return this.nodes.has(keyOf(uri)) || this.children(uri).length > 0;
  }

  /** Child node names of an interior node. */
  children(uri: string): string[] {
    const prefix = keyOf(uri).replace(/\/?$/, '/');
    const names = new Set<string>();
    for (const [k, n] of this.nodes) if (k.startsWith(prefix)) names.add(n.uri.slice(prefix.length).split('/')[0]!);
    return [...names];
  }

  /** All leaf nodes (a snapshot, e.g. for an Atomic to roll back to). */
  snapshot(): Map<string, TreeNode & { uri: string }> {
    return new Map([...this.nodes].map(([k, v]) => [k, { ...v }]));
  }

  restore(s: Map<string, TreeNode & { uri: string }>): void {
    this.nodes = new Map([...s].map(([k, v]) => [k, { ...v }]));
  }

  private known(uri: string): boolean {
    const k = keyOf(uri);
    return ROOTS.some((r) => (k + '/').startsWith(r)) || Object.hasOwn(EXECS, k);
  }

  add(uri: string, format: string, value: string): number {
    if (!this.known(uri)) return 404;
    const cur = this.get(uri);
    if (cur?.readOnly || keyOf(uri).startsWith(RESULT)) return 405;
    if (cur || this.children(uri).length) return 418;
    this.set(uri, { format, value });
    return 200;
  }

  replace(uri: string, format: string, value: string): number {
    if (!this.known(uri)) return 404;
    const cur = this.get(uri);
    if (cur?.readOnly || keyOf(uri).startsWith(RESULT)) return 405;
    if (!cur && !REPLACE_CREATES.some((r) => keyOf(uri).startsWith(r))) return 404;
    this.set(uri, { format, value });
    return 200;
  }

  delete(uri: string): number {
    if (!this.known(uri)) return 404;
    const k = keyOf(uri);
    const cur = this.nodes.get(k);
    if (cur?.readOnly || k.startsWith(RESULT)) return 405;
    const prefix = k + '/';
    const under = [...this.nodes.keys()].filter((x) => x === k || x.startsWith(prefix));
    if (!under.length) return 404;
    for (const x of under) {
      this.nodes.delete(x);
      if (x.startsWith(CONFIG)) this.nodes.delete(RESULT + x.slice(CONFIG.length));
    }
    return 200;
  }

  /** A Get: the leaf's value, or an interior node's child names ('/'-separated, as Windows lists them). */
  read(uri: string): { code: number; format?: string; value?: string } {
    if (!this.known(uri)) return { code: 404 };
    const n = this.get(uri);
    if (n) return { code: 200, format: n.format, value: n.value };
    const kids = this.children(uri);
    return kids.length ? { code: 200, format: 'node', value: kids.join('/') } : { code: 404 };
  }

  exec(uri: string): { code: number; action?: ExecAction } {
    const action = Object.hasOwn(EXECS, keyOf(uri)) ? EXECS[keyOf(uri)] : undefined;
    return action ? { code: 200, action } : { code: this.known(uri) ? 405 : 404 };
  }
}
