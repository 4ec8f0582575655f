// Apple MDM's wire types: every check-in message and command report decoded
// once, here, into typed values; every command encoded here. Nothing past
// this module sees a raw plist dictionary.
// Reference: Apple Device Management, "Check-in" and "Commands and Queries"
// (developer.apple.com/documentation/devicemanagement).

export class WireError extends Error {}

type Dict = Record<string, unknown>;

const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v) && !(v instanceof Date);
const str = (d: Dict, k: string): string | undefined => (typeof d[k] === 'string' ? (d[k] as string) : undefined);
const data = (d: Dict, k: string): Buffer | undefined => (Buffer.isBuffer(d[k]) ? (d[k] as Buffer) : undefined);
const need = (d: Dict, k: string, what: string): string => {
  const v = str(d, k);
  if (!v) throw new WireError(`${what} without ${k}`);
  return v;
};

/** Who a message is about: the device (UDID) or, for User Enrollment, its EnrollmentID. */
export interface Enrollee {
  udid: string;
  /** Set for user-channel messages (a macOS user on the device). */
  userId?: string;
}

export type CheckinMessage =
  | (Enrollee & {
      type: 'Authenticate';
      topic: string;
      serialNumber?: string;
      model?: string;
      modelName?: string;
      productName?: string;
      osVersion?: string;
      buildVersion?: string;
      deviceName?: string;
      imei?: string;
      meid?: string;
    })
  | (Enrollee & { type: 'TokenUpdate'; topic: string; token: Buffer; pushMagic: string; unlockToken?: Buffer; awaitingConfiguration: boolean })
  | (Enrollee & { type: 'CheckOut' })
  | (Enrollee & { type: 'UserAuthenticate' })
  | (Enrollee & { type: 'SetBootstrapToken'; bootstrapToken?: Buffer; awaitingConfiguration: boolean })
  | (Enrollee & { type: 'GetBootstrapToken'; awaitingConfiguration: boolean })
  | (Enrollee & { type: 'DeclarativeManagement'; endpoint: string; data?: Buffer });

function enrollee(d: Dict, what: string): Enrollee {
  // User Enrollment devices send EnrollmentID instead of UDID.
  const udid = str(d, 'UDID') ?? str(d, 'EnrollmentID');
  if (!udid) throw new WireError(`${what} without UDID or EnrollmentID`);
  if (udid.length > 128 || !/^[\w.:-]+$/.test(udid)) throw new WireError(`${what}: UDID is not an identifier`);
  const userId = str(d, 'UserID') ?? str(d, 'EnrollmentUserID');
  return { udid, ...(userId ? { userId } : {}) };
}

export function parseCheckin(v: unknown): CheckinMessage {
  if (!isDict(v)) throw new WireError('a check-in must be a dictionary');
  const type = str(v, 'MessageType');
  if (!type) throw new WireError('a check-in without MessageType');
  const e = enrollee(v, type);
  const awaiting = v.AwaitingConfiguration === true;
  switch (type) {
    case 'Authenticate': {
      const opt = (k: string) => str(v, k);
      const fields = {
        serialNumber: opt('SerialNumber'),
        model: opt('Model'),
        modelName: opt('ModelName'),
        productName: opt('ProductName'),
        osVersion: opt('OSVersion'),
        buildVersion: opt('BuildVersion'),
        deviceName: opt('DeviceName'),
        imei: opt('IMEI'),
        meid: opt('MEID'),
      };
      return { type, ...e, topic: need(v, 'Topic', type), ...(Object.fromEntries(Object.entries(fields).filter(([, x]) => x !== undefined)) as Partial<typeof fields>) };
    }
    case 'TokenUpdate': {
      const token = data(v, 'Token');
      if (!token || token.length === 0) throw new WireError('TokenUpdate without Token');
      const unlockToken = data(v, 'UnlockToken');
      return { type, ...e, topic: need(v, 'Topic', type), token, pushMagic: need(v, 'PushMagic', type), awaitingConfiguration: awaiting, ...(unlockToken ? { unlockToken } : {}) };
    }
    case 'CheckOut':
    case 'UserAuthenticate':
      return { type, ...e };
    case 'SetBootstrapToken': {
      const bootstrapToken = data(v, 'BootstrapToken');
      return { type, ...e, awaitingConfiguration: awaiting, ...(bootstrapToken ? { bootstrapToken } : {}) };
    }
    case 'GetBootstrapToken':
      return { type, ...e, awaitingConfiguration: awaiting };
    case 'DeclarativeManagement': {
      const d = data(v, 'Data');
      return { type, ...e, endpoint: need(v, 'Endpoint', type), ...(d ? { data: d } : {}) };
    }
    default:
      throw new WireError(`unknown check-in MessageType "${type.slice(0, 40)}"`);
  }
}

export type ReportStatus = 'Idle' | 'Acknowledged' | 'Error' | 'CommandFormatError' | 'NotNow';
const STATUSES: readonly ReportStatus[] = ['Idle', 'Acknowledged', 'Error', 'CommandFormatError', 'NotNow'];

export interface ErrorChainEntry {
  code?: number;
  domain?: string;
  description?: string;
}

export interface CommandReport extends Enrollee {
  status: ReportStatus;
  /** Absent only for Idle. */
  commandUuid?: string;
  errorChain: ErrorChainEntry[];
  /** Everything else the device sent back (ProfileList, QueryResponses, SecurityInfo …). */
  result: Dict;
}

const REPORT_KEYS = new Set(['UDID', 'EnrollmentID', 'UserID', 'EnrollmentUserID', 'Status', 'CommandUUID', 'ErrorChain']);

export function parseReport(v: unknown): CommandReport {
  if (!isDict(v)) throw new WireError('a command report must be a dictionary');
  const status = str(v, 'Status') as ReportStatus | undefined;
  if (!status || !STATUSES.includes(status)) throw new WireError(`unknown report Status "${String(v.Status).slice(0, 40)}"`);
  const e = enrollee(v, `${status} report`);
  const commandUuid = str(v, 'CommandUUID');
  if (status !== 'Idle' && !commandUuid) throw new WireError(`${status} report without CommandUUID`);
  const chain = Array.isArray(v.ErrorChain) ? v.ErrorChain.filter(isDict) : [];
  const errorChain = chain.map((x) => ({
    ...(typeof x.ErrorCode === 'number' ? { code: x.ErrorCode } : {}),
    ...(typeof x.ErrorDomain === 'string' ? { domain: x.ErrorDomain } : {}),
    ...(typeof (x.USEnglishDescription ?? x.LocalizedDescription) === 'string' ? { description: String(x.USEnglishDescription ?? x.LocalizedDescription) } : {}),
  }));
  const result: Dict = {};
  for (const [k, x] of Object.entries(v)) if (!REPORT_KEYS.has(k)) result[k] = x;
  return { ...e, status, ...(commandUuid ? { commandUuid } : {}), errorChain, result };
}

/** One line for logs and the command's stored error: "MCProfileErrorDomain 1009: The profile is invalid". */
export function describeErrorChain(chain: readonly ErrorChainEntry[]): string {
  if (chain.length === 0) return 'the device reported an error without details';
  return chain.map((c) => [c.domain, c.code, c.description && `: ${c.description}`].filter((x) => x !== undefined && x !== '').join(' ').replace(' :', ':')).join(' ← ');
}

/** The command dictionary Apple expects: {CommandUUID, Command: {RequestType, …}}. */
export function commandDict(uuid: string, requestType: string, fields: Dict = {}): Dict {
  return { CommandUUID: uuid, Command: { RequestType: requestType, ...fields } };
}

/** Items of a ProfileList answer: identifier → PayloadUUID of the installed profile. */
export function profileListOf(result: Dict): Map<string, string> | undefined {
  if (!Array.isArray(result.ProfileList)) return undefined;
  const out = new Map<string, string>();
  for (const p of result.ProfileList) {
    if (isDict(p) && typeof p.PayloadIdentifier === 'string' && typeof p.PayloadUUID === 'string') out.set(p.PayloadIdentifier, p.PayloadUUID);
  }
  return out;
}

/** A DeviceInformation answer's QueryResponses as strings (what device attributes can hold). */
export function queryResponsesOf(result: Dict): Record<string, string> | undefined {
  const q = result.QueryResponses;
  if (!isDict(q)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(q)) if (typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') out[k] = String(x);
  return out;
}
