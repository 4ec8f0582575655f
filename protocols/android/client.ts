// The Android Management API through Google's own client
// (@googleapis/androidmanagement), with every call going through the quota
// limiter, and errors turned into one typed AmapiError.
//
// Credentials: a service-account key (file or JSON), or application default
// credentials. With a key, the access token is fetched here (a JWT signed with
// jose, exchanged at the key's token_uri or a configured URL) because the
// client library's own JWT flow has Google's token URL built in, and tests and
// private endpoints need another; the token is handed to the library's
// OAuth2 client through its refreshHandler, so the library does the rest.
import { readFileSync } from 'node:fs';
import { androidmanagement, auth, type androidmanagement_v1 } from '@googleapis/androidmanagement';
import { SignJWT, importPKCS8 } from 'jose';
import { RateLimiter, type CallFailure, type RateLimitOptions } from './ratelimit.js';

export const AMAPI_SCOPE = 'https://www.googleapis.com/auth/androidmanagement';
const DEFAULT_TOKEN_URL = 'https://oauth2.googleapis.com/token';

export type Policy = androidmanagement_v1.Schema$Policy;
export type Device = androidmanagement_v1.Schema$Device;
export type Operation = androidmanagement_v1.Schema$Operation;
export type EnrollmentToken = androidmanagement_v1.Schema$EnrollmentToken;

export interface AmapiOptions {
  /** A service-account key file, or its JSON text; neither: application default credentials. */
  keyFile?: string;
  keyJson?: string;
  /** Where the key is exchanged for an access token (default: the key's token_uri). */
  tokenUrl?: string;
  /** The API's root, e.g. https://androidmanagement.googleapis.com/ (default) or a local server in tests. */
  rootUrl?: string;
  rateLimit?: RateLimitOptions;
}

/** A failed AMAPI call: the HTTP status and Google's message. */
export class AmapiError extends Error {
  override name = 'AmapiError';
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly reason?: string,
  ) {
    super(message);
  }
}

interface ServiceAccountKey {
  client_email: string;
  private_key: string;
  token_uri?: string;
}

function authClient(o: AmapiOptions) {
  const text = o.keyJson ?? (o.keyFile ? readFileSync(o.keyFile, 'utf8') : undefined);
  if (!text) return new auth.GoogleAuth({ scopes: [AMAPI_SCOPE] });
  let key: ServiceAccountKey;
  try {
    key = JSON.parse(text) as ServiceAccountKey;
  } catch {
    throw new AmapiError(`the service-account key${o.keyFile ? ` ${o.keyFile}` : ''} is not JSON`, undefined);
  }
  if (!key.client_email || !key.private_key) throw new AmapiError('the service-account key has no client_email or private_key', undefined);
  const tokenUrl = o.tokenUrl ?? key.token_uri ?? DEFAULT_TOKEN_URL;
  const client = new auth.OAuth2();
  client.refreshHandler = async () => {
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ scope: AMAPI_SCOPE })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setIssuer(key.client_email)
      .setAudience(tokenUrl)
      .setIssuedAt(now)
      .setExpirationTime(now + 3600)
      .sign(await importPKCS8(key.private_key, 'RS256'));
    const res = await fetch(tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }),
      signal: AbortSignal.timeout(30_000),
    });
    const body = (await res.json().catch(() => ({}))) as { access_token?: string; expires_in?: number; error_description?: string; error?: string };
    if (!res.ok || !body.access_token) throw new AmapiError(`token exchange at ${tokenUrl} failed: ${res.status} ${body.error_description ?? body.error ?? ''}`.trim(), res.status);
    return { access_token: body.access_token, expiry_date: Date.now() + (body.expires_in ?? 3600) * 1000 };
  };
  return client;
}

/** What the limiter and callers need from a gaxios error. */
function classify(e: unknown): CallFailure & { message: string; reason?: string } {
  const r = (e as { response?: { status?: number; headers?: Record<string, string>; data?: { error?: { message?: string; status?: string } } } }).response;
  const ra = r?.headers?.['retry-after'];
  const secs = ra !== undefined && /^\d+$/.test(ra) ? Number(ra) : undefined;
  return {
    ...(r?.status !== undefined ? { status: r.status } : {}),
    ...(secs !== undefined ? { retryAfterMs: secs * 1000 } : {}),
    message: r?.data?.error?.message ?? (e as Error).message,
    ...(r?.data?.error?.status ? { reason: r.data.error.status } : {}),
  };
}

export class Amapi {
  readonly api: androidmanagement_v1.Androidmanagement;
  readonly limiter: RateLimiter;

  constructor(o: AmapiOptions) {
    // retry: false — the limiter retries, so each attempt is counted against the quota.
    this.api = androidmanagement({ version: 'v1', auth: authClient(o), retry: false, ...(o.rootUrl ? { rootUrl: o.rootUrl } : {}) });
    this.limiter = new RateLimiter(o.rateLimit);
  }

  /** One API call within the quota; failures as AmapiError. */
  async call<T>(what: string, fn: () => Promise<{ data: T }>): Promise<T> {
    try {
      return (await this.limiter.run(fn, classify)).data;
    } catch (e) {
      if (e instanceof AmapiError) throw e;
      const c = classify(e);
      throw new AmapiError(`${what}: ${c.status ?? 'no answer'} ${c.message}`, c.status, c.reason);
    }
  }

  patchPolicy(name: string, policy: Policy): Promise<Policy> {
    return this.call(`policies.patch ${name}`, () => this.api.enterprises.policies.patch({ name, requestBody: policy }));
  }
  getPolicy(name: string): Promise<Policy> {
    return this.call(`policies.get ${name}`, () => this.api.enterprises.policies.get({ name }));
  }
  deletePolicy(name: string): Promise<unknown> {
    return this.call(`policies.delete ${name}`, () => this.api.enterprises.policies.delete({ name }));
  }
  listPolicies(parent: string, pageToken?: string): Promise<androidmanagement_v1.Schema$ListPoliciesResponse> {
    return this.call(`policies.list ${parent}`, () => this.api.enterprises.policies.list({ parent, pageSize: 100, ...(pageToken ? { pageToken } : {}) }));
  }
  setDevicePolicy(name: string, policyName: string): Promise<Device> {
    return this.call(`devices.patch ${name}`, () => this.api.enterprises.devices.patch({ name, updateMask: 'policyName', requestBody: { policyName } }));
  }
  getDevice(name: string): Promise<Device> {
    return this.call(`devices.get ${name}`, () => this.api.enterprises.devices.get({ name }));
  }
  listDevices(parent: string, pageToken?: string, pageSize = 100): Promise<androidmanagement_v1.Schema$ListDevicesResponse> {
    return this.call(`devices.list ${parent}`, () => this.api.enterprises.devices.list({ parent, pageSize, ...(pageToken ? { pageToken } : {}) }));
  }
  deleteDevice(name: string, wipeDataFlags: string[] = []): Promise<unknown> {
    return this.call(`devices.delete ${name}`, () => this.api.enterprises.devices.delete({ name, ...(wipeDataFlags.length ? { wipeDataFlags } : {}) }));
  }
  issueCommand(name: string, command: androidmanagement_v1.Schema$Command): Promise<Operation> {
    return this.call(`devices.issueCommand ${name}`, () => this.api.enterprises.devices.issueCommand({ name, requestBody: command }));
  }
  getOperation(name: string): Promise<Operation> {
    return this.call(`operations.get ${name}`, () => this.api.enterprises.devices.operations.get({ name }));
  }
  createEnrollmentToken(parent: string, token: EnrollmentToken): Promise<EnrollmentToken> {
    return this.call(`enrollmentTokens.create ${parent}`, () => this.api.enterprises.enrollmentTokens.create({ parent, requestBody: token }));
  }
  deleteEnrollmentToken(name: string): Promise<unknown> {
    return this.call(`enrollmentTokens.delete ${name}`, () => this.api.enterprises.enrollmentTokens.delete({ name }));
  }
  createSignupUrl(projectId: string, callbackUrl: string): Promise<androidmanagement_v1.Schema$SignupUrl> {
    return this.call('signupUrls.create', () => this.api.signupUrls.create({ projectId, callbackUrl }));
  }
  createEnterprise(projectId: string, signupUrlName: string, enterpriseToken: string, displayName?: string): Promise<androidmanagement_v1.Schema$Enterprise> {
    return this.call('enterprises.create', () => this.api.enterprises.create({ projectId, signupUrlName, enterpriseToken, requestBody: displayName ? { enterpriseDisplayName: displayName } : {} }));
  }
}
