// The Android Management API through Google's own client
// (@googleapis/androidmanagement), with every call going through the quota
// limiter, and every failure turned into one typed AmapiError carrying
// Google's message.
//
// Credentials: a service-account key (a file or its JSON text), or else
// application default credentials (GoogleAuth: the metadata server, workload
// identity, GOOGLE_APPLICATION_CREDENTIALS). With a key, the access token is
// fetched here — a JWT-bearer grant signed with jose, sent to the key's
// token_uri or a configured URL — because the library's own JWT flow has
// Google's token URL built in, and tests and private endpoints need another.
// The token reaches the library's OAuth2 client through its refreshHandler, so
// the library does the rest.
//
// Retries: googleapis retries GET/PUT/DELETE on 429 and 5xx by default; the
// client is built with `retry: false` so that the limiter alone retries, and
// every attempt is counted against the quota.
import { readFileSync } from 'node:fs';
import { androidmanagement, auth, type androidmanagement_v1 } from '@googleapis/androidmanagement';
import { SignJWT, importPKCS8 } from 'jose';
import { RateLimiter, parseRetryAfter, type CallFailure, type RateLimitOptions } from './ratelimit.js';

export const AMAPI_SCOPE = 'https://www.googleapis.com/auth/androidmanagement';
export const DEFAULT_TOKEN_URL = 'https://oauth2.googleapis.com/token';

export type Policy = androidmanagement_v1.Schema$Policy;
export type Device = androidmanagement_v1.Schema$Device;
export type Operation = androidmanagement_v1.Schema$Operation;
export type EnrollmentToken = androidmanagement_v1.Schema$EnrollmentToken;
export type Enterprise = androidmanagement_v1.Schema$Enterprise;
export type AmapiCommand = androidmanagement_v1.Schema$Command;

export interface AmapiOptions {
  /** A service-account key file, or its JSON text; neither: application default credentials. */
  keyFile?: string;
  keyJson?: string;
  /** Where the key is exchanged for an access token (default: the key's token_uri). */
  tokenUrl?: string;
  /** The API's root, e.g. https://androidmanagement.googleapis.com/ (default) or a local server in tests. */
  rootUrl?: string;
  rateLimit?: RateLimitOptions;
  /** Stands in for the googleapis client (in-process fakes for load tests); the limiter still applies. */
  api?: androidmanagement_v1.Androidmanagement;
}

/** A failed AMAPI call: the HTTP status and Google's message. */
export class AmapiError extends Error {
  override name = 'AmapiError';
  constructor(
    message: string,
    /** HTTP status; undefined when no answer came. */
    readonly status: number | undefined,
    /** Google's status name (NOT_FOUND, INVALID_ARGUMENT …). */
    readonly reason?: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

interface ServiceAccountKey {
  type?: string;
  client_email: string;
  private_key: string;
  private_key_id?: string;
  token_uri?: string;
}

function readKey(o: AmapiOptions): ServiceAccountKey | undefined {
  let text = o.keyJson;
  if (text === undefined && o.keyFile) {
    try {
      text = readFileSync(o.keyFile, 'utf8');
    } catch (e) {
      throw new AmapiError(`cannot read the service-account key ${o.keyFile}: ${(e as Error).message}`, undefined);
    }
  }
  if (text === undefined) return undefined;
  let key: ServiceAccountKey;
  try {
    key = JSON.parse(text) as ServiceAccountKey;
  } catch {
    throw new AmapiError(`the service-account key${o.keyFile ? ` ${o.keyFile}` : ''} is not JSON`, undefined);
  }
  if (typeof key.client_email !== 'string' || typeof key.private_key !== 'string') throw new AmapiError('the service-account key has no client_email or private_key', undefined);
  return key;
}

/** An OAuth2 client whose access tokens come from a JWT-bearer grant at `tokenUrl`. */
function keyAuth(key: ServiceAccountKey, tokenUrl: string) {
  const client = new auth.OAuth2();
  let pending: Promise<{ access_token: string; expiry_date: number }> | undefined;
  const refresh = async () => {
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ scope: AMAPI_SCOPE })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', ...(key.private_key_id ? { kid: key.private_key_id } : {}) })
      .setIssuer(key.client_email)
      .setAudience(tokenUrl)
      .setIssuedAt(now)
      .setExpirationTime(now + 3600)
      .sign(await importPKCS8(key.private_key, 'RS256'));
    let res: Response;
    try {
      res = await fetch(tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (e) {
      throw new AmapiError(`token exchange at ${tokenUrl} failed: ${(e as Error).message}`, undefined);
    }
    const body = (await res.json().catch(() => ({}))) as { access_token?: unknown; expires_in?: unknown; error_description?: unknown; error?: unknown };
    if (!res.ok || typeof body.access_token !== 'string') {
      const why = [body.error, body.error_description].filter((x) => typeof x === 'string').join(': ');
      throw new AmapiError(`token exchange at ${tokenUrl} failed: ${res.status}${why ? ` ${why}` : ''}`, res.status, undefined, parseRetryAfter(res.headers.get('retry-after') ?? undefined, Date.now()));
    }
    const ttl = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 3600;
    return { access_token: body.access_token, expiry_date: Date.now() + ttl * 1000 };
  };
  // Calls that start together share one token request.
  client.refreshHandler = () => (pending ??= refresh().finally(() => (pending = undefined)));
  return client;
}

interface GaxiosLike {
  response?: { status?: number; headers?: Record<string, string>; data?: unknown };
  config?: unknown;
  code?: string;
}

/** What the limiter and callers need from a failure. */
export function classifyFailure(e: unknown, now = Date.now()): CallFailure & { message: string; reason?: string } {
  if (e instanceof AmapiError) return { ...(e.status !== undefined ? { status: e.status } : {}), ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {}), message: e.message, ...(e.reason ? { reason: e.reason } : {}) };
  const g = e as GaxiosLike;
  const r = g?.response;
  if (!r) {
    // No answer: a lost connection is worth retrying; an error raised before sending is not.
    const local = !g || typeof g !== 'object' || (g.config === undefined && g.code === undefined);
    return { local, message: (e as Error)?.message ?? String(e) };
  }
  const data = (typeof r.data === 'string' ? safeJson(r.data) : r.data) as { error?: { message?: unknown; status?: unknown } } | undefined;
  const retryAfterMs = parseRetryAfter(r.headers?.['retry-after'], now);
  return {
    ...(r.status !== undefined ? { status: r.status } : {}),
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    message: typeof data?.error?.message === 'string' ? data.error.message : (e as Error).message,
    ...(typeof data?.error?.status === 'string' ? { reason: data.error.status } : {}),
  };
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

export class Amapi {
  readonly api: androidmanagement_v1.Androidmanagement;
  readonly limiter: RateLimiter;
  /** Requests sent per method (retries included): what the quota was spent on. */
  readonly requests: Record<string, number> = {};

  constructor(o: AmapiOptions) {
    if (o.api) {
      this.api = o.api;
    } else {
      const key = readKey(o);
      const client = key ? keyAuth(key, o.tokenUrl ?? key.token_uri ?? DEFAULT_TOKEN_URL) : new auth.GoogleAuth({ scopes: [AMAPI_SCOPE] });
      this.api = androidmanagement({ version: 'v1', auth: client, retry: false, ...(o.rootUrl ? { rootUrl: o.rootUrl } : {}) });
    }
    this.limiter = new RateLimiter(o.rateLimit);
  }

  /** One API call within the quota; failures as AmapiError. */
  async call<T>(method: string, target: string, fn: () => Promise<{ data: T }>, idempotent = true): Promise<T> {
    try {
      return (
        await this.limiter.run(
          () => {
            this.requests[method] = (this.requests[method] ?? 0) + 1;
            return fn();
          },
          (e) => classifyFailure(e),
          { idempotent },
        )
      ).data;
    } catch (e) {
      const c = classifyFailure(e);
      if (e instanceof AmapiError) throw e;
      throw new AmapiError(`${method} ${target}: ${c.status ?? 'no answer'}${c.reason ? ` ${c.reason}` : ''}: ${c.message}`, c.status, c.reason, c.retryAfterMs);
    }
  }

  getEnterprise(name: string): Promise<Enterprise> {
    return this.call('enterprises.get', name, () => this.api.enterprises.get({ name }));
  }
  /** Updates the fields named in updateMask only (e.g. pubsubTopic,enabledNotificationTypes). */
  patchEnterprise(name: string, enterprise: Enterprise, updateMask: readonly string[]): Promise<Enterprise> {
    if (!updateMask.length) throw new AmapiError('enterprises.patch needs an updateMask', undefined);
    return this.call('enterprises.patch', name, () => this.api.enterprises.patch({ name, updateMask: updateMask.join(','), requestBody: enterprise }));
  }
  /** Creates or replaces the policy (every field: the policy is Muster's desired state). */
  patchPolicy(name: string, policy: Policy): Promise<Policy> {
    return this.call('policies.patch', name, () => this.api.enterprises.policies.patch({ name, requestBody: policy }));
  }
  getPolicy(name: string): Promise<Policy> {
    return this.call('policies.get', name, () => this.api.enterprises.policies.get({ name }));
  }
  deletePolicy(name: string): Promise<unknown> {
    return this.call('policies.delete', name, () => this.api.enterprises.policies.delete({ name }));
  }
  listPolicies(parent: string, pageToken?: string, pageSize = 100): Promise<androidmanagement_v1.Schema$ListPoliciesResponse> {
    return this.call('policies.list', parent, () => this.api.enterprises.policies.list({ parent, pageSize, ...(pageToken ? { pageToken } : {}) }));
  }
  /** Points a device at a policy: only policyName changes (a patch without a mask would replace the device). */
  setDevicePolicy(name: string, policyName: string): Promise<Device> {
    return this.call('devices.patch', name, () => this.api.enterprises.devices.patch({ name, updateMask: 'policyName', requestBody: { policyName } }));
  }
  getDevice(name: string): Promise<Device> {
    return this.call('devices.get', name, () => this.api.enterprises.devices.get({ name }));
  }
  listDevices(parent: string, pageToken?: string, pageSize = 100): Promise<androidmanagement_v1.Schema$ListDevicesResponse> {
    return this.call('devices.list', parent, () => this.api.enterprises.devices.list({ parent, pageSize, ...(pageToken ? { pageToken } : {}) }));
  }
  /** Deletes the device; a company-owned device is wiped, a personal one loses its work profile. */
  deleteDevice(name: string, o: { wipeDataFlags?: readonly string[]; wipeReasonMessage?: string } = {}): Promise<unknown> {
    return this.call('devices.delete', name, () =>
      this.api.enterprises.devices.delete({ name, ...(o.wipeDataFlags?.length ? { wipeDataFlags: [...o.wipeDataFlags] } : {}), ...(o.wipeReasonMessage ? { wipeReasonMessage: o.wipeReasonMessage } : {}) }),
    );
  }
  /** Not idempotent (a second LOCK is a second command): retried only on 429. */
  issueCommand(name: string, command: AmapiCommand): Promise<Operation> {
    return this.call('devices.issueCommand', name, () => this.api.enterprises.devices.issueCommand({ name, requestBody: command }), false);
  }
  getOperation(name: string): Promise<Operation> {
    return this.call('operations.get', name, () => this.api.enterprises.devices.operations.get({ name }));
  }
  createEnrollmentToken(parent: string, token: EnrollmentToken): Promise<EnrollmentToken> {
    return this.call('enrollmentTokens.create', parent, () => this.api.enterprises.enrollmentTokens.create({ parent, requestBody: token }), false);
  }
  deleteEnrollmentToken(name: string): Promise<unknown> {
    return this.call('enrollmentTokens.delete', name, () => this.api.enterprises.enrollmentTokens.delete({ name }));
  }
  listEnrollmentTokens(parent: string, pageToken?: string): Promise<androidmanagement_v1.Schema$ListEnrollmentTokensResponse> {
    return this.call('enrollmentTokens.list', parent, () => this.api.enterprises.enrollmentTokens.list({ parent, pageSize: 100, ...(pageToken ? { pageToken } : {}) }));
  }
  createSignupUrl(projectId: string, callbackUrl: string): Promise<androidmanagement_v1.Schema$SignupUrl> {
    return this.call('signupUrls.create', projectId, () => this.api.signupUrls.create({ projectId, callbackUrl }), false);
  }
  createEnterprise(projectId: string, signupUrlName: string, enterpriseToken: string, enterprise: Enterprise = {}): Promise<Enterprise> {
    return this.call('enterprises.create', projectId, () => this.api.enterprises.create({ projectId, signupUrlName, enterpriseToken, requestBody: enterprise }), false);
  }
}
