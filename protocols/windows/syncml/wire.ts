// The OMA-DM (SyncML 1.2 / 1.1) wire format, and nothing else: a device
// message decoded once into typed values, a server message encoded from
// typed values. XML goes only through ../xml.ts (bounded, no entities).
//
// Facts this follows (MS-MDM, OMA-TS-DM_RepPro, the Windows CSP reference):
// - the root is <SyncML xmlns="SYNCML:SYNCML1.2"> (Windows also accepts and
//   may send SYNCML1.1); Meta's Format/Type/MaxMsgSize are in the
//   `syncml:metinf` namespace, declared on the element (local names here);
// - SessionID, MsgID and CmdID are opaque strings (Windows sends `D`-style
//   hex session ids and UUID CmdIDs), compared as text, never as numbers;
// - elements follow the DTD order: Status is (CmdID, MsgRef, CmdRef, Cmd,
//   TargetRef*, SourceRef*, Data, Item*), Item is (Target?, Source?, Meta?, Data?);
// - embedded XML (a Wi-Fi profile) travels as entity-escaped text in Data:
//   Windows does not support CDATA there, and writeXml always escapes.
import { XmlError, child, children, el, parseXml, textAt, writeXml, type XmlElement, type XmlNode } from '../xml.js';

export class SyncmlError extends Error {
  override name = 'SyncmlError';
}

export type SyncmlVersion = '1.1' | '1.2';

export const SYNCML_CONTENT_TYPE = 'application/vnd.syncml.dm+xml';
const NAMESPACES: Record<string, SyncmlVersion> = { 'syncml:syncml1.2': '1.2', 'syncml:syncml1.1': '1.1' };
export const METINF = 'syncml:metinf';

export interface SyncmlLimits {
  /** Largest message read, bytes. Default 1 MiB. */
  maxBytes?: number;
  /** Most commands (nested ones included) in one message. Default 10,000. */
  maxCommands?: number;
  /** Most Items in one command. Default 2,000. */
  maxItems?: number;
}
const LIMITS: Required<SyncmlLimits> = { maxBytes: 1024 * 1024, maxCommands: 10_000, maxItems: 2_000 };
/** Identifiers (SessionID, MsgID, CmdID, MsgRef, CmdRef) longer than this are refused: they are short tokens. */
const MAX_ID = 128;
const MAX_URI = 4096;

export interface Meta {
  format?: string;
  type?: string;
  maxMsgSize?: number;
  maxObjSize?: number;
}

export interface Item {
  target?: string;
  /** LocName of the Target (the user name for syncml:auth-md5, when a device sends one). */
  targetName?: string;
  source?: string;
  sourceName?: string;
  meta?: Meta;
  /** The Data element's text (entities decoded), or its child XML written out when it holds elements. */
  data?: string;
  moreData?: boolean;
}

export interface Cred {
  format?: string;
  /** e.g. syncml:auth-md5, syncml:auth-basic */
  type?: string;
  data: string;
}

export interface SyncHdr {
  verDTD: string;
  verProto: string;
  sessionId: string;
  msgId: string;
  target: { locUri: string; locName?: string };
  source: { locUri: string; locName?: string };
  respUri?: string;
  cred?: Cred;
  meta?: Meta;
}

/** The commands a device may put in its SyncBody (and inside Atomic / Sequence). */
export type ClientCommand =
  | { kind: 'Alert'; cmdId: string; data: string; items: Item[] }
  | { kind: 'Status'; cmdId: string; msgRef: string; cmdRef: string; cmd: string; data: string; targetRefs: string[]; sourceRefs: string[]; items: Item[] }
  | { kind: 'Results'; cmdId: string; msgRef: string; cmdRef: string; meta?: Meta; targetRefs: string[]; sourceRefs: string[]; items: Item[] }
  | { kind: 'Add' | 'Replace' | 'Get' | 'Delete' | 'Exec' | 'Copy'; cmdId: string; meta?: Meta; items: Item[] }
  | { kind: 'Atomic' | 'Sequence'; cmdId: string; commands: ClientCommand[] }
  /** An element that is not a SyncML command: answered with 400, as Windows does. */
  | { kind: 'Unknown'; name: string; cmdId: string };

export interface ClientMessage {
  version: SyncmlVersion;
  hdr: SyncHdr;
  body: ClientCommand[];
  /** <Final/> present: the sender's package is complete. */
  final: boolean;
}

// ------------------------------------------------------------------ decoding

const str = (v: string | undefined, what: string, max: number, required = true): string => {
  if (v === undefined || v === '') {
    if (required) throw new SyncmlError(`${what} is missing`);
    return '';
  }
  if (v.length > max) throw new SyncmlError(`${what} is longer than ${max} characters`);
  return v;
};

function metaOf(e: XmlElement | undefined): Meta | undefined {
  if (!e) return undefined;
  const m: Meta = {};
  const format = textAt(e, 'Format');
  const type = textAt(e, 'Type');
  const size = textAt(e, 'MaxMsgSize');
  const obj = textAt(e, 'MaxObjSize');
  if (format) m.format = str(format, 'Meta Format', 64);
  if (type) m.type = str(type, 'Meta Type', 512);
  if (size && /^\d{1,10}$/.test(size)) m.maxMsgSize = Number(size);
  if (obj && /^\d{1,12}$/.test(obj)) m.maxObjSize = Number(obj);
  return Object.keys(m).length ? m : undefined;
}

/** Data holding elements (rare: devices escape XML) is written back out so nothing is lost. */
function dataOf(e: XmlElement): string {
  if (!e.children.length) return e.text;
  const toNode = (x: XmlElement): XmlNode => ({ name: x.prefix ? `${x.prefix}:${x.name}` : x.name, attrs: x.attrs, children: x.children.length ? x.children.map(toNode) : x.text ? [x.text] : [] });
  return e.children.map((c) => writeXml(toNode(c))).join('') + e.text;
}

function itemOf(e: XmlElement): Item {
  const it: Item = {};
  const target = child(e, 'Target');
  const source = child(e, 'Source');
  if (target) {
    it.target = str(textAt(target, 'LocURI'), 'Item Target LocURI', MAX_URI, false) || undefined;
    const n = textAt(target, 'LocName');
    if (n) it.targetName = str(n, 'LocName', 256);
  }
  if (source) {
    it.source = str(textAt(source, 'LocURI'), 'Item Source LocURI', MAX_URI, false) || undefined;
    const n = textAt(source, 'LocName');
    if (n) it.sourceName = str(n, 'LocName', 256);
  }
  const meta = metaOf(child(e, 'Meta'));
  if (meta) it.meta = meta;
  const data = child(e, 'Data');
  if (data) it.data = dataOf(data);
  if (child(e, 'MoreData')) it.moreData = true;
  return it;
}

const COMMANDS = new Set(['Alert', 'Status', 'Results', 'Add', 'Replace', 'Get', 'Delete', 'Exec', 'Copy', 'Atomic', 'Sequence']);

function commandOf(e: XmlElement, counter: { n: number; limits: Required<SyncmlLimits> }, depth: number): ClientCommand {
  if (++counter.n > counter.limits.maxCommands) throw new SyncmlError(`more than ${counter.limits.maxCommands} commands in one message`);
  const cmdId = str(textAt(e, 'CmdID'), `${e.name} CmdID`, MAX_ID, false);
  if (!COMMANDS.has(e.name)) return { kind: 'Unknown', name: e.name.slice(0, 64), cmdId };
  const items = children(e, 'Item');
  if (items.length > counter.limits.maxItems) throw new SyncmlError(`${e.name} has more than ${counter.limits.maxItems} items`);
  const its = items.map(itemOf);
  const refs = (name: string) => children(e, name).map((r) => str(r.text, name, MAX_URI, false)).filter(Boolean);
  switch (e.name) {
    case 'Alert':
      return { kind: 'Alert', cmdId, data: str(textAt(e, 'Data'), 'Alert Data', 16, false), items: its };
    case 'Status':
      return {
        kind: 'Status',
        cmdId,
        msgRef: str(textAt(e, 'MsgRef'), 'Status MsgRef', MAX_ID, false),
        cmdRef: str(textAt(e, 'CmdRef'), 'Status CmdRef', MAX_ID, false),
        cmd: str(textAt(e, 'Cmd'), 'Status Cmd', 32, false),
        data: str(textAt(e, 'Data'), 'Status Data', 16, false),
        targetRefs: refs('TargetRef'),
        sourceRefs: refs('SourceRef'),
        items: its,
      };
    case 'Results': {
      const meta = metaOf(child(e, 'Meta'));
      return { kind: 'Results', cmdId, msgRef: str(textAt(e, 'MsgRef'), 'Results MsgRef', MAX_ID, false), cmdRef: str(textAt(e, 'CmdRef'), 'Results CmdRef', MAX_ID, false), ...(meta ? { meta } : {}), targetRefs: refs('TargetRef'), sourceRefs: refs('SourceRef'), items: its };
    }
    case 'Atomic':
    case 'Sequence': {
      if (depth > 4) throw new SyncmlError('Atomic / Sequence nested too deeply');
      const commands = e.children.filter((c) => c.name !== 'CmdID' && c.name !== 'Meta' && c.name !== 'NoResp').map((c) => commandOf(c, counter, depth + 1));
      return { kind: e.name, cmdId, commands };
    }
    default: {
      const meta = metaOf(child(e, 'Meta'));
      return { kind: e.name as 'Add' | 'Replace' | 'Get' | 'Delete' | 'Exec' | 'Copy', cmdId, ...(meta ? { meta } : {}), items: its };
    }
  }
}

/** Decodes one device message. Throws SyncmlError (unreadable or over a limit); the HTTP answer is then 400. */
export function decodeClientMessage(body: Buffer | string, limits: SyncmlLimits = {}): ClientMessage {
  const l = { ...LIMITS, ...limits };
  let root: XmlElement;
  try {
    root = parseXml(body, { maxBytes: l.maxBytes, maxDepth: 24 });
  } catch (e) {
    if (e instanceof XmlError) throw new SyncmlError(e.message);
    throw e;
  }
  if (root.name !== 'SyncML') throw new SyncmlError(`the root element is <${root.name.slice(0, 64)}>, not <SyncML>`);
  const ns = (root.attrs.xmlns ?? (root.prefix ? root.attrs[`xmlns:${root.prefix}`] : undefined) ?? '').toLowerCase();
  const version = NAMESPACES[ns];
  if (!version) throw new SyncmlError(`unsupported SyncML namespace "${ns.slice(0, 64)}" (SYNCML:SYNCML1.2 or SYNCML:SYNCML1.1)`);
  const h = child(root, 'SyncHdr');
  const b = child(root, 'SyncBody');
  if (!h || !b) throw new SyncmlError('a SyncML message needs SyncHdr and SyncBody');
  const credEl = child(h, 'Cred');
  const credMeta = metaOf(child(credEl, 'Meta'));
  const hdrMeta = metaOf(child(h, 'Meta'));
  const loc = (e: XmlElement | undefined, what: string) => {
    const locName = textAt(e, 'LocName');
    return { locUri: str(textAt(e, 'LocURI'), `SyncHdr ${what} LocURI`, MAX_URI), ...(locName ? { locName: str(locName, 'LocName', 256) } : {}) };
  };
  const hdr: SyncHdr = {
    verDTD: str(textAt(h, 'VerDTD'), 'VerDTD', 16),
    verProto: str(textAt(h, 'VerProto'), 'VerProto', 16),
    sessionId: str(textAt(h, 'SessionID'), 'SessionID', MAX_ID),
    msgId: str(textAt(h, 'MsgID'), 'MsgID', MAX_ID),
    target: loc(child(h, 'Target'), 'Target'),
    source: loc(child(h, 'Source'), 'Source'),
  };
  const respUri = textAt(h, 'RespURI');
  if (respUri) hdr.respUri = str(respUri, 'RespURI', MAX_URI);
  if (credEl) hdr.cred = { ...(credMeta?.format ? { format: credMeta.format } : {}), ...(credMeta?.type ? { type: credMeta.type } : {}), data: str(textAt(credEl, 'Data'), 'Cred Data', 4096, false) };
  if (hdrMeta) hdr.meta = hdrMeta;
  const counter = { n: 0, limits: l };
  const commands: ClientCommand[] = [];
  let final = false;
  for (const c of b.children) {
    if (c.name === 'Final') final = true;
    else commands.push(commandOf(c, counter, 0));
  }
  return { version, hdr, body: commands, final };
}

// ------------------------------------------------------------------ encoding

export interface ServerItem {
  target?: string;
  source?: string;
  format?: string;
  type?: string;
  data?: string;
}

export interface ServerStatus {
  kind: 'Status';
  cmdId: string;
  msgRef: string;
  cmdRef: string;
  cmd: string;
  targetRefs?: string[];
  sourceRefs?: string[];
  /** The status code, e.g. 200, 212, 404. */
  data: string;
}

/** What a server sends: management commands (Atomic holds no Get and no Atomic), and Alerts. */
export type ServerCommand =
  | { kind: 'Add' | 'Replace' | 'Exec'; cmdId: string; items: ServerItem[] }
  | { kind: 'Get' | 'Delete'; cmdId: string; items: ServerItem[] }
  | { kind: 'Atomic' | 'Sequence'; cmdId: string; commands: ServerCommand[] }
  | { kind: 'Alert'; cmdId: string; data: string; items?: ServerItem[] };

export interface ServerMessage {
  version: SyncmlVersion;
  sessionId: string;
  msgId: string;
  /** The device: its Source LocURI from the message being answered. */
  target: string;
  /** The server's URL. */
  source: string;
  body: Array<ServerStatus | ServerCommand>;
  final: boolean;
}

const metinf = (name: string, v: string | undefined) => (v === undefined ? undefined : el(name, { xmlns: METINF }, v));

function itemNode(it: ServerItem): XmlNode {
  const meta = it.format !== undefined || it.type !== undefined ? el('Meta', undefined, metinf('Format', it.format), metinf('Type', it.type)) : undefined;
  return el(
    'Item',
    undefined,
    it.target !== undefined ? el('Target', undefined, el('LocURI', undefined, it.target)) : undefined,
    it.source !== undefined ? el('Source', undefined, el('LocURI', undefined, it.source)) : undefined,
    meta,
    it.data !== undefined ? el('Data', undefined, it.data) : undefined,
  );
}

/** One body element as an XML node (also used to measure a command against MaxMsgSize). */
export function bodyNode(c: ServerStatus | ServerCommand): XmlNode {
  switch (c.kind) {
    case 'Status':
      return el(
        'Status',
        undefined,
        el('CmdID', undefined, c.cmdId),
        el('MsgRef', undefined, c.msgRef),
        el('CmdRef', undefined, c.cmdRef),
        el('Cmd', undefined, c.cmd),
        ...(c.targetRefs ?? []).map((r) => el('TargetRef', undefined, r)),
        ...(c.sourceRefs ?? []).map((r) => el('SourceRef', undefined, r)),
        el('Data', undefined, c.data),
      );
    case 'Atomic':
    case 'Sequence':
      return el(c.kind, undefined, el('CmdID', undefined, c.cmdId), ...c.commands.map(bodyNode));
    case 'Alert':
      return el('Alert', undefined, el('CmdID', undefined, c.cmdId), el('Data', undefined, c.data), ...(c.items ?? []).map(itemNode));
    default:
      return el(c.kind, undefined, el('CmdID', undefined, c.cmdId), ...c.items.map(itemNode));
  }
}

/** Bytes a body element adds to a message. */
export const bodySize = (c: ServerStatus | ServerCommand): number => Buffer.byteLength(writeXml(bodyNode(c)), 'utf8');

/** Encodes a server message (UTF-8 XML text). */
export function encodeServerMessage(m: ServerMessage): string {
  return writeMessage(m, syncHdr(m), m.body.map(bodyNode));
}

/** The SyncHdr both sides write: versions, session, message id, target and source, then what a side adds. */
function syncHdr(m: { version: SyncmlVersion; sessionId: string; msgId: string; target: string; source: string }, sourceName?: XmlNode, ...extra: Array<XmlNode | undefined>): XmlNode {
  return el(
    'SyncHdr',
    undefined,
    el('VerDTD', undefined, m.version),
    el('VerProto', undefined, `DM/${m.version}`),
    el('SessionID', undefined, m.sessionId),
    el('MsgID', undefined, m.msgId),
    el('Target', undefined, el('LocURI', undefined, m.target)),
    el('Source', undefined, el('LocURI', undefined, m.source), sourceName),
    ...extra,
  );
}

function writeMessage(m: { version: SyncmlVersion; final: boolean }, hdr: XmlNode, body: XmlNode[]): string {
  return writeXml(el('SyncML', { xmlns: m.version === '1.1' ? 'SYNCML:SYNCML1.1' : 'SYNCML:SYNCML1.2' }, hdr, el('SyncBody', undefined, ...body, m.final ? el('Final') : undefined)), { declaration: true });
}

/** Bytes of a message with this header and an empty body (the envelope the budget starts from). */
export function envelopeSize(m: Omit<ServerMessage, 'body' | 'final'>): number {
  return Buffer.byteLength(encodeServerMessage({ ...m, body: [], final: true }), 'utf8');
}

// ------------------------------------------------------------------ a device's side (the simulator)

/**
 * A device message as the simulator writes it: the same shapes a Windows PC
 * sends (Cred with Meta in syncml:metinf, Alert items with Meta Type, Results
 * with Source LocURIs). Kept here so the wire format has one home.
 */
export interface DeviceMessage {
  version: SyncmlVersion;
  sessionId: string;
  msgId: string;
  /** The device id (Source LocURI). */
  source: string;
  /** The server URL (Target LocURI). */
  target: string;
  cred?: Cred & { locName?: string };
  maxMsgSize?: number;
  body: DeviceBodyElement[];
  final: boolean;
}

export type DeviceBodyElement =
  | { kind: 'Alert'; cmdId: string; data: string; items?: ServerItem[] }
  | { kind: 'Status'; cmdId: string; msgRef: string; cmdRef: string; cmd: string; data: string; targetRefs?: string[]; sourceRefs?: string[] }
  | { kind: 'Results'; cmdId: string; msgRef: string; cmdRef: string; items: ServerItem[] }
  | { kind: 'Replace'; cmdId: string; items: ServerItem[] };

export function encodeDeviceMessage(m: DeviceMessage): string {
  const node = (c: DeviceBodyElement): XmlNode => {
    if (c.kind === 'Results') return el('Results', undefined, el('CmdID', undefined, c.cmdId), el('MsgRef', undefined, c.msgRef), el('CmdRef', undefined, c.cmdRef), ...c.items.map(itemNode));
    return bodyNode(c as ServerStatus | ServerCommand);
  };
  const hdr = syncHdr(
    m,
    m.cred?.locName !== undefined ? el('LocName', undefined, m.cred.locName) : undefined,
    m.cred ? el('Cred', undefined, el('Meta', undefined, metinf('Format', m.cred.format), metinf('Type', m.cred.type)), el('Data', undefined, m.cred.data)) : undefined,
    m.maxMsgSize !== undefined ? el('Meta', undefined, metinf('MaxMsgSize', String(m.maxMsgSize))) : undefined,
  );
  return writeMessage(m, hdr, m.body.map(node));
}

/** A server message as a device reads it (the simulator): header, then commands and statuses in order. */
export interface DecodedServerMessage {
  version: SyncmlVersion;
  sessionId: string;
  msgId: string;
  target: string;
  source: string;
  body: ClientCommand[];
  final: boolean;
}

/** Reading a server message is the same grammar as a device message (the header just has no Cred). */
export function decodeServerMessage(body: Buffer | string, limits: SyncmlLimits = {}): DecodedServerMessage {
  const m = decodeClientMessage(body, limits);
  return { version: m.version, sessionId: m.hdr.sessionId, msgId: m.hdr.msgId, target: m.hdr.target.locUri, source: m.hdr.source.locUri, body: m.body, final: m.final };
}
