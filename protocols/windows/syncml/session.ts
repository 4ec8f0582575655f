// The OMA-DM session as a pure state machine. The state is plain JSON kept in
// the database between messages (the next message of a session may reach
// another replica); the service (../mdm-service.ts) loads it, feeds each
// device message to receive(), performs what the receipt says (reports,
// requeues, device facts), then fills the answer with a Composer.
//
// Bookkeeping, from MS-MDM / OMA DM 1.2:
// - every server message has a fresh MsgID (1, 2, … within the session) and
//   every command in it a fresh CmdID; a device answers with Status (and
//   Results for a Get) whose MsgRef is our MsgID and CmdRef our CmdID, so
//   `sent[MsgID][CmdID]` says which queued command a status belongs to;
// - the first Status we send answers the device's SyncHdr (CmdRef 0,
//   Cmd SyncHdr, 212 when it carried credentials we accept, else 200), then
//   one per device command in order (Status and Results are never answered:
//   OMA DM says Status MUST NOT be sent in response to Results);
// - Atomic: the device answers 507 for the Atomic and 216 for each rolled-back
//   child when one child fails; no Get and no Atomic may sit inside one;
// - Add on an existing node answers 418: the command is sent once more with
//   those Adds as Replace;
// - packages and Final (OMA-TS-DM_Protocol 1.2 "Multiple messages in
//   package"): the server sends Final in every message it can, and sends no
//   new commands until the device has answered the previous ones. So when our
//   commands do not fit the device's MaxMsgSize, this message still ends our
//   package (Final) and the rest waits for the next one, after the device's
//   statuses. Only the "Next Message" answer to a device message without
//   Final (its package goes on) leaves Final off: statuses, Alert 1222, no
//   commands. A server message without commands ends the session (the device
//   has nothing left to answer).
import type { ClientCommand, ClientMessage, Item, ServerCommand, ServerItem, ServerStatus, SyncmlVersion } from './wire.js';
import { bodySize, encodeServerMessage, envelopeSize } from './wire.js';

// ------------------------------------------------------------------ what is sent

/** A queued command as the driver renders it: one top-level SyncML command. */
export type CommandSpec =
  | { verb: 'Add' | 'Replace'; items: Array<{ target: string; format?: string; type?: string; data?: string }> }
  | { verb: 'Exec'; items: Array<{ target: string; format?: string; type?: string; data?: string }> }
  | { verb: 'Get' | 'Delete'; items: Array<{ target: string }> }
  | { verb: 'Atomic' | 'Sequence'; commands: CommandSpec[] };

export type ContainerSpec = Extract<CommandSpec, { commands: CommandSpec[] }>;
export type LeafSpec = Exclude<CommandSpec, ContainerSpec>;
export const isContainer = (s: CommandSpec): s is ContainerSpec => 'commands' in s;

export interface RenderedCommand {
  spec: CommandSpec;
  /** Status codes that still count as done for this command (a read-back Get tolerates 404). */
  tolerate?: number[];
}

/** Why a rendered command cannot be sent at all (a protocol rule it breaks). */
export function specProblem(spec: CommandSpec, inAtomic = false): string | undefined {
  if (isContainer(spec)) {
    if (spec.verb === 'Atomic' && inAtomic) return 'an Atomic cannot hold another Atomic';
    if (!spec.commands.length) return `an empty ${spec.verb}`;
    for (const c of spec.commands) {
      if ((spec.verb === 'Atomic' || inAtomic) && c.verb === 'Get') return 'an Atomic cannot hold a Get';
      const p = specProblem(c, inAtomic || spec.verb === 'Atomic');
      if (p) return p;
    }
    return undefined;
  }
  if (!spec.items.length) return `a ${spec.verb} without items`;
  return undefined;
}

// ------------------------------------------------------------------ state

export interface LeafStatus {
  /** Position in the rendered command: "0", "0.1" (second child of an Atomic). */
  path: string;
  verb: string;
  targets: string[];
  code: number;
  /** The TargetRef of a per-item status (a multi-item Get answered item by item). */
  targetRefs?: string[];
}

export interface ResultItem {
  source: string;
  format?: string;
  type?: string;
  data?: string;
}

interface SentRef {
  uuid: string;
  path: string;
  verb: string;
  targets: string[];
}

interface Work {
  attempt: number;
  /** Paths still waiting for their Status. */
  expect: string[];
  statuses: LeafStatus[];
  results: ResultItem[];
  tolerate?: number[];
  /** On the next attempt, these Add targets go as Replace (they answered 418). */
  replaceTargets?: string[];
  replacedAfter418?: string[];
}

export interface SessionState {
  v: 1;
  sessionId: string;
  version: SyncmlVersion;
  /** The device's LocURI (Source of its SyncHdr). */
  device: string;
  lastClientMsgId: string | null;
  serverMsgId: number;
  nextCmdId: number;
  maxMsgSize: number;
  /** Server messages sent in this session. */
  messages: number;
  ended: boolean;
  /** Sent and not yet answered: server MsgID → CmdID → the queued command it belongs to. */
  sent: Record<string, Record<string, SentRef>>;
  /** Queued commands in this session, by UUID: sent (awaiting statuses) or waiting for room. */
  work: Record<string, Work>;
  /** Claimed (or due for a retry) but not sent yet, in order. */
  carry: string[];
}

export function newSession(o: { sessionId: string; version: SyncmlVersion; device: string; maxMsgSize: number }): SessionState {
  return { v: 1, sessionId: o.sessionId, version: o.version, device: o.device, lastClientMsgId: null, serverMsgId: 0, nextCmdId: 1, maxMsgSize: o.maxMsgSize, messages: 0, ended: false, sent: {}, work: {}, carry: [] };
}

/** Every queued command a session holds (sent or waiting): what to put back in the queue if it ends early. */
export function unfinishedWork(s: SessionState): string[] {
  return [...new Set([...Object.keys(s.work), ...s.carry])];
}

// ------------------------------------------------------------------ receiving

export const ALERT = {
  serverInitiated: '1200',
  clientInitiated: '1201',
  nextMessage: '1222',
  sessionAbort: '1223',
  clientEvent: '1224',
  genericAlert: '1226',
} as const;

const KNOWN_ALERTS = new Set<string>(Object.values(ALERT));

export interface ReceivedAlert {
  code: string;
  items: Item[];
}

/** What finished on the device: every status of one queued command is in. */
export interface CommandOutcome {
  uuid: string;
  ok: boolean;
  statuses: LeafStatus[];
  results: ResultItem[];
  /** Human summary of what failed ("Replace ./…/AllowCamera: 405 command not allowed"). */
  error?: string;
  /** Targets that answered 418 to Add and were then sent as Replace. */
  replacedAfter418?: string[];
  /** The device did not run it (215: the user cancelled, or it was not the time): worth trying again later, like Apple's NotNow. */
  notExecuted?: boolean;
}

export interface Receipt {
  state: SessionState;
  /** Our answers to the device's header and commands, CmdIDs assigned, in order. */
  statuses: ServerStatus[];
  alerts: ReceivedAlert[];
  /** Node values the device volunteered (Replace / Add in its package: ./DevInfo/…) and every Results item. */
  facts: Array<{ locUri: string; format?: string; data?: string }>;
  completed: CommandOutcome[];
  /** Sent and never answered although the device closed its package: put back in the queue. */
  lost: string[];
  /** The device aborted (Alert 1223). */
  aborted: boolean;
  /** The device's package is complete (it sent <Final/>). */
  clientFinal: boolean;
  /** Statuses or Results that match nothing we sent (logged, otherwise ignored). */
  unmatched: number;
}

export const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  202: 'accepted for processing',
  212: 'authentication accepted',
  213: 'chunked item accepted',
  214: 'operation cancelled',
  215: 'not executed',
  216: 'rolled back (another command in the Atomic failed)',
  400: 'bad request',
  401: 'invalid credentials',
  403: 'forbidden',
  404: 'not found',
  405: 'command not allowed',
  406: 'optional feature not supported',
  415: 'unsupported type or format',
  418: 'already exists',
  425: 'permission denied',
  500: 'command failed',
  507: 'Atomic failed',
  516: 'Atomic roll back failed',
};

const describe = (code: number) => `${code} ${STATUS_TEXT[code] ?? 'failed'}`;
const okCode = (code: number, tolerate?: number[]) => (code >= 200 && code < 300 && code !== 215 && code !== 216) || !!tolerate?.includes(code);

/**
 * Folds one device message into the session: statuses and results matched to
 * what was sent, commands answered, outcomes of finished commands. Pure.
 * `credentialsAccepted`: the message was authenticated (its certificate), so
 * Cred in its header is answered 212.
 */
export function receive(prev: SessionState, msg: ClientMessage, o: { credentialsAccepted: boolean }): Receipt {
  const state: SessionState = structuredClone(prev);
  const statuses: ServerStatus[] = [];
  const alerts: ReceivedAlert[] = [];
  const facts: Receipt['facts'] = [];
  let aborted = false;
  let unmatched = 0;
  const touched = new Set<string>();
  const cmdId = () => String(state.nextCmdId++);
  const msgRef = msg.hdr.msgId;
  const answer = (cmdRef: string, cmd: string, code: number, refs: { targetRefs?: string[]; sourceRefs?: string[] } = {}) =>
    statuses.push({ kind: 'Status', cmdId: cmdId(), msgRef, cmdRef, cmd, ...refs, data: String(code) });

  if (msg.hdr.meta?.maxMsgSize) state.maxMsgSize = Math.min(state.maxMsgSize, msg.hdr.meta.maxMsgSize);
  answer('0', 'SyncHdr', msg.hdr.cred && o.credentialsAccepted ? 212 : 200, { targetRefs: [msg.hdr.target.locUri], sourceRefs: [msg.hdr.source.locUri] });

  const refOf = (m: string, c: string): SentRef | undefined => state.sent[m]?.[c];

  /** Answers one device command; returns its code (containers answer for their children too). */
  const handle = (c: ClientCommand, inAtomic: boolean): number => {
    switch (c.kind) {
      case 'Status': {
        if (c.cmdRef === '0' || c.cmd === 'SyncHdr') return 0; // the device's answer to our header
        const ref = refOf(c.msgRef, c.cmdRef);
        if (!ref) {
          // Our own Alerts (1222) are answered too; they carry no queued work.
          if (c.cmd !== 'Alert') unmatched++;
          return 0;
        }
        const w = state.work[ref.uuid];
        if (!w) {
          unmatched++;
          return 0;
        }
        const code = Number.parseInt(c.data, 10);
        w.statuses.push({ path: ref.path, verb: ref.verb, targets: ref.targets, code: Number.isFinite(code) ? code : 500, ...(c.targetRefs.length ? { targetRefs: c.targetRefs } : {}) });
        w.expect = w.expect.filter((p) => p !== ref.path);
        touched.add(ref.uuid);
        return 0;
      }
      case 'Results': {
        const ref = refOf(c.msgRef, c.cmdRef);
        const w = ref && state.work[ref.uuid];
        if (!w) unmatched++;
        for (const it of c.items) {
          const source = it.source ?? it.target ?? c.targetRefs[0] ?? '';
          const format = it.meta?.format ?? c.meta?.format;
          const type = it.meta?.type ?? c.meta?.type;
          const r: ResultItem = { source, ...(format ? { format } : {}), ...(type ? { type } : {}), ...(it.data !== undefined ? { data: it.data } : {}) };
          if (w) w.results.push(r);
          if (source) facts.push({ locUri: source, ...(format ? { format } : {}), ...(it.data !== undefined ? { data: it.data } : {}) });
        }
        if (ref) touched.add(ref.uuid);
        // OMA DM (multiple messages in package): Status MUST NOT be sent in response to Results.
        return 200;
      }
      case 'Alert': {
        alerts.push({ code: c.data, items: c.items });
        if (c.data === ALERT.sessionAbort) aborted = true;
        const code = KNOWN_ALERTS.has(c.data) ? 200 : 406;
        answer(c.cmdId, 'Alert', code);
        return code;
      }
      case 'Replace':
      case 'Add': {
        // A device reports its own nodes this way (./DevInfo/… in its first package).
        for (const it of c.items) {
          const locUri = it.source ?? it.target;
          const format = it.meta?.format ?? c.meta?.format;
          if (locUri) facts.push({ locUri, ...(format ? { format } : {}), ...(it.data !== undefined ? { data: it.data } : {}) });
        }
        answer(c.cmdId, c.kind, 200);
        return 200;
      }
      case 'Get':
      case 'Delete':
      case 'Exec':
      case 'Copy':
        // Muster's tree holds nothing a device may read or run.
        answer(c.cmdId, c.kind, 406);
        return 406;
      case 'Atomic':
      case 'Sequence': {
        if (c.kind === 'Atomic' && inAtomic) {
          answer(c.cmdId, c.kind, 500);
          return 500;
        }
        const at = statuses.length;
        answer(c.cmdId, c.kind, 200);
        const codes = c.commands.map((x) => handle(x, inAtomic || c.kind === 'Atomic'));
        if (c.kind === 'Atomic' && codes.some((x) => x >= 300)) {
          statuses[at]!.data = '507';
          // Nothing inside took effect: the children that succeeded are rolled back.
          for (const s of statuses.slice(at + 1)) if (s.data === '200') s.data = '216';
          return 507;
        }
        return 200;
      }
      case 'Unknown':
        answer(c.cmdId, c.name, 400);
        return 400;
    }
  };
  for (const c of msg.body) handle(c, false);

  state.lastClientMsgId = msg.hdr.msgId;
  const completed: CommandOutcome[] = [];
  // Once the device's package is complete, a Get still waiting for its Results has all it will get.
  if (msg.final) for (const [uuid, w] of Object.entries(state.work)) if (w.statuses.length && !w.expect.length) touched.add(uuid);
  for (const uuid of touched) {
    const w = state.work[uuid];
    if (!w || w.expect.length) continue;
    // A device's package may span messages: a Get's Results can follow its Status in the next one.
    if (!msg.final && !w.results.length && w.statuses.some((x) => x.verb === 'Get' && x.code >= 200 && x.code < 300)) continue;
    const retryTargets = w.attempt === 1 ? [...new Set(w.statuses.filter((s) => s.verb === 'Add' && s.code === 418).flatMap((s) => s.targets))] : [];
    forgetSent(state, uuid);
    if (retryTargets.length) {
      // 418 on Add: the node exists. Send the command once more with those Adds as Replace (an Atomic around them was rolled back whole).
      state.work[uuid] = { attempt: 2, expect: [], statuses: [], results: [], ...(w.tolerate ? { tolerate: w.tolerate } : {}), replaceTargets: retryTargets, replacedAfter418: retryTargets };
      state.carry.unshift(uuid);
      continue;
    }
    delete state.work[uuid];
    completed.push(outcomeOf(uuid, w));
  }

  const lost: string[] = [];
  if (msg.final && !aborted) {
    // The device answers each of our messages in its next one: a command still waiting now was lost.
    for (const [uuid, w] of Object.entries(state.work)) {
      if (!w.expect.length || state.carry.includes(uuid)) continue;
      lost.push(uuid);
      forgetSent(state, uuid);
      delete state.work[uuid];
    }
  }
  return { state, statuses, alerts, facts, completed, lost, aborted, clientFinal: msg.final, unmatched };
}

function forgetSent(state: SessionState, uuid: string): void {
  for (const [m, refs] of Object.entries(state.sent)) {
    for (const [c, r] of Object.entries(refs)) if (r.uuid === uuid) delete refs[c];
    if (!Object.keys(refs).length) delete state.sent[m];
  }
}

function outcomeOf(uuid: string, w: Work): CommandOutcome {
  const bad = w.statuses.filter((s) => !okCode(s.code, w.tolerate));
  // Name the cause: not the children rolled back (216), nor the Atomic's 507 when a child says why.
  const causes = bad.filter((s) => s.code !== 216 && !(s.code === 507 && bad.some((x) => x.code !== 507 && x.code !== 216)));
  const error = bad.length ? (causes.length ? causes : bad).map((s) => `${s.verb} ${(s.targetRefs ?? s.targets).join(', ') || '(no target)'}: ${describe(s.code)}`).join('; ') : undefined;
  const notExecuted = bad.length > 0 && bad.some((s) => s.code === 215) && bad.every((s) => s.code === 215 || s.code === 216 || s.code === 507);
  return { uuid, ok: !bad.length, statuses: w.statuses, results: w.results, ...(error ? { error } : {}), ...(w.replacedAfter418 ? { replacedAfter418: w.replacedAfter418 } : {}), ...(notExecuted ? { notExecuted } : {}) };
}

/** Removes commands from a session (requeued or failed elsewhere), keeping the rest. */
export function dropWork(s: SessionState, uuids: readonly string[]): SessionState {
  const state = structuredClone(s);
  for (const u of uuids) {
    forgetSent(state, u);
    delete state.work[u];
  }
  state.carry = state.carry.filter((u) => !uuids.includes(u));
  return state;
}

// ------------------------------------------------------------------ answering

export type AddResult = 'added' | 'full' | 'too-large' | 'invalid';

/**
 * Builds the server's answer: the receipt's statuses first, then queued
 * commands while they fit the device's MaxMsgSize. Pure; the service claims
 * commands from the queue and offers them one at a time.
 */
export class Composer {
  private readonly state: SessionState;
  private readonly body: Array<ServerStatus | ServerCommand> = [];
  private readonly msgId: string;
  private used: number;
  private commands = 0;
  private readonly added = new Set<string>();

  constructor(
    state: SessionState,
    statuses: readonly ServerStatus[],
    private readonly serverUrl: string,
    private readonly o: { maxCommands?: number } = {},
  ) {
    this.state = structuredClone(state);
    this.msgId = String(this.state.serverMsgId + 1);
    this.body.push(...statuses);
    this.used = envelopeSize({ version: state.version, sessionId: state.sessionId, msgId: this.msgId, target: state.device, source: serverUrl }) + statuses.reduce((n, s) => n + bodySize(s), 0);
    // Every later message carries at least the Status for the device's SyncHdr: a command that cannot fit beside it never will.
    const hdr = statuses.find((s) => s.cmdRef === '0' && s.cmd === 'SyncHdr');
    this.floor = hdr ? bodySize(hdr) : 0;
  }

  private readonly floor: number;

  /** Commands added so far. */
  get count(): number {
    return this.commands;
  }

  /** True once a command did not fit: the rest waits for the next package (after the device's statuses). */
  full = false;

  /** The work a queued command still has in this session (the 418 retry), if any. */
  pending(uuid: string): { replaceTargets?: string[] } | undefined {
    const w = this.state.work[uuid];
    return w ? { ...(w.replaceTargets ? { replaceTargets: w.replaceTargets } : {}) } : undefined;
  }

  /**
   * Offers one queued command. 'full': it did not fit; it is carried to the
   * next package. 'too-large': it can never fit the device's MaxMsgSize.
   * 'invalid': it breaks a protocol rule (Get inside Atomic, nested Atomic).
   */
  add(uuid: string, r: RenderedCommand): AddResult {
    if (this.added.has(uuid)) return 'added';
    if (specProblem(r.spec)) return 'invalid';
    const prev = this.state.work[uuid];
    const replaceTargets = prev?.replaceTargets;
    const refs: Record<string, SentRef> = {};
    const expect: string[] = [];
    let next = this.state.nextCmdId;
    const build = (spec: CommandSpec, path: string): ServerCommand => {
      const id = String(next++);
      expect.push(path);
      if (isContainer(spec)) {
        refs[id] = { uuid, path, verb: spec.verb, targets: [] };
        return { kind: spec.verb, cmdId: id, commands: spec.commands.map((c, i) => build(c, `${path}.${i}`)) };
      }
      let verb: string = spec.verb;
      if (verb === 'Add' && replaceTargets && spec.items.every((it) => replaceTargets.includes(it.target))) verb = 'Replace';
      const targets = spec.items.map((it) => it.target);
      refs[id] = { uuid, path, verb, targets };
      const items: ServerItem[] = spec.items.map((it) => ({ target: it.target, ...('format' in it && it.format !== undefined ? { format: it.format } : {}), ...('type' in it && it.type !== undefined ? { type: it.type } : {}), ...('data' in it && it.data !== undefined ? { data: it.data } : {}) }));
      return { kind: verb as 'Add' | 'Replace' | 'Exec' | 'Get' | 'Delete', cmdId: id, items };
    };
    const cmd = build(r.spec, '0');
    const size = bodySize(cmd);
    const envelope = envelopeSize({ version: this.state.version, sessionId: this.state.sessionId, msgId: this.msgId, target: this.state.device, source: this.serverUrl });
    if (size + envelope + this.floor + 16 > this.state.maxMsgSize) return 'too-large';
    if (this.full || this.used + size + 16 > this.state.maxMsgSize || this.commands >= (this.o.maxCommands ?? 200)) {
      // A message without commands ends the session, so one that does not fit beside this message's
      // statuses alone waits for the next package while smaller ones may still go in this one.
      if (this.commands > 0) this.full = true;
      if (!this.state.carry.includes(uuid)) this.state.carry.push(uuid);
      if (!prev) this.state.work[uuid] = { attempt: 1, expect: [], statuses: [], results: [], ...(r.tolerate ? { tolerate: r.tolerate } : {}) };
      return 'full';
    }
    this.state.nextCmdId = next;
    this.used += size;
    this.commands++;
    this.added.add(uuid);
    this.body.push(cmd);
    this.state.sent[this.msgId] = { ...this.state.sent[this.msgId], ...refs };
    this.state.work[uuid] = { attempt: prev?.attempt ?? 1, expect, statuses: [], results: [], ...(r.tolerate ? { tolerate: r.tolerate } : {}), ...(prev?.replaceTargets ? { replaceTargets: prev.replaceTargets } : {}), ...(prev?.replacedAfter418 ? { replacedAfter418: prev.replacedAfter418 } : {}) };
    this.state.carry = this.state.carry.filter((u) => u !== uuid);
    return 'added';
  }

  /** Forgets a carried command (it failed to render or cannot be sent). */
  drop(uuid: string): void {
    delete this.state.work[uuid];
    this.state.carry = this.state.carry.filter((u) => u !== uuid);
  }

  private awaitingDevice = false;

  /**
   * The Next Message answer (Alert 1222) to a device message without Final:
   * statuses, the alert, no commands and no Final; the session goes on.
   */
  askForNextMessage(): void {
    const a: ServerCommand = { kind: 'Alert', cmdId: String(this.state.nextCmdId++), data: ALERT.nextMessage };
    this.used += bodySize(a);
    this.body.push(a);
    this.awaitingDevice = true;
  }

  /**
   * The message and the session after it. Final ends every message except
   * the Next Message answer (Alert 1222). A message that carries no command
   * ends the session: the device stops there, so whatever still waits for
   * room (`state.carry`) is the caller's to put back in the queue.
   */
  finish(o: { end?: boolean } = {}): { xml: string; state: SessionState; final: boolean; ended: boolean } {
    const state = this.state;
    const final = !this.awaitingDevice || !!o.end;
    const ended = !!o.end || (this.commands === 0 && !this.awaitingDevice);
    state.serverMsgId = Number(this.msgId);
    state.messages++;
    state.ended = ended;
    const xml = encodeServerMessage({ version: state.version, sessionId: state.sessionId, msgId: this.msgId, target: state.device, source: this.serverUrl, body: this.body, final });
    return { xml, state, final, ended };
  }
}
