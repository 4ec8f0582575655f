// The Pub/Sub push wire format and the AMAPI notifications it carries,
// decoded once into typed values. Nothing past this file reads the envelope.
//
// A push body is {message: {data (base64), attributes: {notificationType},
// messageId, publishTime}, subscription} (messageId and publishTime also come
// as message_id / publish_time). `data` is the JSON of the resource that
// changed, as UTF-8: ENROLLMENT and STATUS_REPORT carry a Device, COMMAND an
// Operation, USAGE_LOGS a BatchUsageLogEvents; a `test` notification carries
// nothing. Anything else is acknowledged and ignored.
import type { androidmanagement_v1 } from '@googleapis/androidmanagement';
import type { Device, Operation } from './client.js';

export type BatchUsageLogEvents = androidmanagement_v1.Schema$BatchUsageLogEvents;

export interface PushEnvelope {
  messageId: string;
  publishTime?: string;
  subscription?: string;
  notificationType: string;
  /** The decoded `data` bytes (empty when absent). */
  data: Buffer;
}

export type Notification =
  | { type: 'ENROLLMENT' | 'STATUS_REPORT'; device: Device }
  | { type: 'COMMAND'; operation: Operation }
  | { type: 'USAGE_LOGS'; batch: BatchUsageLogEvents }
  | { type: 'test' }
  | { type: 'other'; notificationType: string };

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

const MAX_DEPTH = 64;

/** JSON.parse with a nesting limit (a Device is shallow; a deeper body is not one). */
function parseJson(text: string): unknown {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{' || c === '[') max = Math.max(max, ++depth);
    else if (c === '}' || c === ']') depth--;
  }
  if (max > MAX_DEPTH) throw new Error(`nested deeper than ${MAX_DEPTH} levels`);
  return JSON.parse(text);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** The push request body as an envelope; `reason` says why it is not one. */
export function decodePush(body: Buffer | string | undefined): Decoded<PushEnvelope> {
  if (body === undefined || body.length === 0) return { ok: false, reason: 'empty body' };
  let v: unknown;
  try {
    v = parseJson(typeof body === 'string' ? body : body.toString('utf8'));
  } catch (e) {
    return { ok: false, reason: `not JSON: ${(e as Error).message}` };
  }
  if (!isObj(v) || !isObj(v.message)) return { ok: false, reason: 'no message object' };
  const m = v.message;
  const messageId = str(m.messageId) ?? str(m.message_id);
  if (!messageId) return { ok: false, reason: 'message without messageId' };
  const attrs = isObj(m.attributes) ? m.attributes : {};
  const data = m.data === undefined || m.data === null ? '' : m.data;
  if (typeof data !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(data)) return { ok: false, reason: 'message data is not base64' };
  const publishTime = str(m.publishTime) ?? str(m.publish_time);
  return {
    ok: true,
    value: {
      messageId,
      ...(publishTime ? { publishTime } : {}),
      ...(str(v.subscription) ? { subscription: v.subscription as string } : {}),
      notificationType: str(attrs.notificationType) ?? '',
      data: Buffer.from(data, 'base64'),
    },
  };
}

/** The AMAPI notification inside an envelope. */
export function decodeNotification(e: PushEnvelope): Decoded<Notification> {
  const t = e.notificationType;
  if (t === 'test') return { ok: true, value: { type: 'test' } };
  if (t !== 'ENROLLMENT' && t !== 'STATUS_REPORT' && t !== 'COMMAND' && t !== 'USAGE_LOGS') return { ok: true, value: { type: 'other', notificationType: t || '(none)' } };
  let v: unknown;
  try {
    v = parseJson(e.data.toString('utf8'));
  } catch (err) {
    return { ok: false, reason: `${t} data is not JSON: ${(err as Error).message}` };
  }
  if (!isObj(v)) return { ok: false, reason: `${t} data is not an object` };
  switch (t) {
    case 'ENROLLMENT':
    case 'STATUS_REPORT':
      if (!str(v.name)) return { ok: false, reason: `${t} without a device name` };
      return { ok: true, value: { type: t, device: v as Device } };
    case 'COMMAND':
      if (!str(v.name)) return { ok: false, reason: 'COMMAND without an operation name' };
      return { ok: true, value: { type: t, operation: v as Operation } };
    case 'USAGE_LOGS':
      if (!str(v.device)) return { ok: false, reason: 'USAGE_LOGS without a device' };
      return { ok: true, value: { type: t, batch: v as BatchUsageLogEvents } };
  }
}

/** The AMAPI device name's parts: enterprises/{e}/devices/{d}. */
export function parseDeviceName(name: string): { enterprise: string; deviceId: string } | undefined {
  const m = /^(enterprises\/[A-Za-z0-9_-]{1,128})\/devices\/([A-Za-z0-9_-]{1,128})$/.exec(name);
  return m ? { enterprise: m[1]!, deviceId: m[2]! } : undefined;
}

/** enterprises/{e}/devices/{d}/operations/{o} → the device name. */
export function deviceOfOperation(name: string): string | undefined {
  const m = /^(enterprises\/[A-Za-z0-9_-]+\/devices\/[A-Za-z0-9_-]+)\/operations\/[A-Za-z0-9_.-]+$/.exec(name);
  return m?.[1];
}

/** The last segment of a resource name (a policy id). */
export const lastSegment = (name: string | null | undefined): string | undefined => (name ? name.slice(name.lastIndexOf('/') + 1) : undefined);

/** int64 values arrive as JSON strings (sometimes numbers): compared as integers, never as text or floats. */
export function int64(v: unknown): bigint | undefined {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  if (typeof v === 'string' && /^-?\d{1,19}$/.test(v)) return BigInt(v);
  return undefined;
}
