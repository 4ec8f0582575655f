// APNs client for MDM wake-up pushes, on node:http2. Only what MDM needs: the
// body is always {"mdm": PushMagic}, one topic per client. A push only tells
// the device to connect; the command queue stays the truth, so a push that
// fails is logged and returned, never thrown, and the next reconcile pushes
// again. https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type IncomingHttpStatusHeader } from 'node:http2';
import { rootCertificates } from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import { SignJWT } from 'jose';

export const APNS_PRODUCTION = 'https://api.push.apple.com';
export const APNS_SANDBOX = 'https://api.sandbox.push.apple.com';

export interface ApnsLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export type ApnsAuth =
  /** The MDM push certificate from the Apple Push Certificates Portal, presented as the TLS client certificate. */
  | { kind: 'certificate'; certPem: string; keyPem: string; passphrase?: string }
  /** A .p8 signing key (EC P-256) from the developer account: ES256 provider tokens. */
  | { kind: 'token'; keyPem: string; keyId: string; teamId: string };

export interface ApnsOptions {
  /** Default https://api.push.apple.com (APNS_SANDBOX for development certificates). */
  url?: string;
  auth: ApnsAuth;
  /** The MDM push topic: com.apple.mgmt.External.<uuid>, the UID of the push certificate. */
  topic: string;
  /** Long-lived HTTP/2 sessions in the pool. Default 2. */
  connections?: number;
  /** How long APNs keeps a push for an offline device. Default one day; 0 means "now or never". */
  expirationSeconds?: number;
  /** attempts counts the first try (default 3); full-jitter delays grow from baseMs (default 200) up to maxMs (default 30 s); a Retry-After longer than maxMs ends the retries. */
  retry?: { attempts?: number; baseMs?: number; maxMs?: number };
  /** Calls for one device within this window share one request. Default 250 ms. */
  coalesceMs?: number;
  /** Requests in flight at once, across the pool. Default 500. */
  concurrency?: number;
  /** One attempt, connecting included. Default 15 s. */
  requestTimeoutMs?: number;
  /** An extra trusted CA (PEM), added to the system roots; for tests against a local server. */
  ca?: string;
  log: ApnsLog;
  now?: () => number;
  /** Backoff sleep and jitter source, replaceable in tests. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  random?: () => number;
}

export interface PushTarget {
  deviceId: string;
  /** The device token as hex (from TokenUpdate). */
  token: string;
  pushMagic: string;
}

export interface PushResult {
  deviceId: string;
  /** unregistered: APNs answered 410, the token is dead (the only case to prune on). */
  status: 'sent' | 'unregistered' | 'failed';
  apnsId?: string;
  /** APNs' reason (BadDeviceToken, TooManyRequests…) or a local one (Timeout, InvalidToken, ClientClosed, a socket error code). */
  reason?: string;
  httpStatus?: number;
  /** With 410: when APNs last knew the token valid (ms). A TokenUpdate after this means the device has a new token. */
  unregisteredAt?: number;
}

export interface ApnsClient {
  /** One result per input, in order. Never rejects for APNs or network failures; throws after close(). */
  push(devices: readonly PushTarget[]): Promise<PushResult[]>;
  /** Sends what is waiting in the coalescing window, lets requests in flight finish, closes the sessions. */
  close(): Promise<void>;
}

/** Apple refuses new provider tokens more often than this (429 TooManyProviderTokenUpdates) and old ones after an hour. */
export const PROVIDER_TOKEN_REFRESH_MS = 20 * 60_000;

const DAY_SECONDS = 86_400;
const MAX_RESPONSE_BODY = 16 * 1024;
// Apple's tokens are 32 bytes today and documented to grow; hex only, so the token cannot change the path.
const TOKEN_RE = /^(?:[0-9a-fA-F]{2}){8,256}$/;
// 400 reasons that point at the client's configuration rather than one device.
const CONFIG_REASONS = new Set(['BadDeviceToken', 'DeviceTokenNotForTopic', 'BadTopic', 'TopicDisallowed', 'MissingTopic']);

export function createApnsClient(o: ApnsOptions): ApnsClient {
  return new Apns(o);
}

type Attempt =
  | { kind: 'final'; result: PushResult }
  | { kind: 'retry'; result: PushResult; retryAfterMs?: number }
  | { kind: 'expired-token'; result: PushResult; jwt: string };

class Apns implements ApnsClient {
  readonly #o: ApnsOptions;
  readonly #now: () => number;
  readonly #sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly #random: () => number;
  readonly #attempts: number;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #expirationSeconds: number;
  readonly #coalesceMs: number;
  readonly #timeoutMs: number;
  readonly #pool: SessionPool;
  readonly #tokens: ProviderTokens | undefined;
  readonly #slots: Semaphore;
  readonly #closing = new AbortController();
  #window: Map<string, Waiting> | undefined;
  #windowTimer: NodeJS.Timeout | undefined;
  readonly #inFlight = new Set<Promise<void>>();

  constructor(o: ApnsOptions) {
    if (!o.topic.startsWith('com.apple.mgmt.')) throw new Error(`APNs topic "${o.topic}" is not an MDM push topic (com.apple.mgmt.…)`);
    const connections = o.connections ?? 2;
    if (!Number.isInteger(connections) || connections < 1) throw new Error('APNs connections must be a positive integer');
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#sleep = o.sleep ?? ((ms, signal) => delay(ms, undefined, { signal }).catch(() => undefined));
    this.#random = o.random ?? Math.random;
    this.#attempts = Math.max(1, o.retry?.attempts ?? 3);
    this.#baseMs = o.retry?.baseMs ?? 200;
    this.#maxMs = o.retry?.maxMs ?? 30_000;
    this.#expirationSeconds = o.expirationSeconds ?? DAY_SECONDS;
    this.#coalesceMs = o.coalesceMs ?? 250;
    this.#timeoutMs = o.requestTimeoutMs ?? 15_000;
    this.#slots = new Semaphore(o.concurrency ?? 500);
    const url = new URL(o.url ?? APNS_PRODUCTION);
    if (url.protocol !== 'https:') throw new Error(`APNs URL must be https: ${url.href}`);
    const tls: TlsOptions = o.ca ? { ca: [...rootCertificates, o.ca] } : {};
    if (o.auth.kind === 'certificate') {
      Object.assign(tls, { cert: o.auth.certPem, key: o.auth.keyPem, ...(o.auth.passphrase !== undefined ? { passphrase: o.auth.passphrase } : {}) });
      checkPushCertificate(o.auth.certPem, o.topic, this.#now(), o.log);
    } else {
      this.#tokens = new ProviderTokens(o.auth, this.#now, o.log);
    }
    this.#pool = new SessionPool(url.origin, tls, connections, this.#timeoutMs, o.log);
  }

  async push(devices: readonly PushTarget[]): Promise<PushResult[]> {
    if (this.#closing.signal.aborted) throw new Error('APNs client is closed');
    return Promise.all(devices.map((d) => this.#join(d)));
  }

  async close(): Promise<void> {
    if (!this.#closing.signal.aborted) {
      this.#closing.abort();
      this.#flush();
    }
    // Backoff sleeps end at once (their pushes report ClientClosed); requests on the wire finish.
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    await this.#pool.close();
  }

  // Coalescing: one window for the whole client, opened by the first call and
  // flushed when it ends; the latest token and PushMagic win, since a
  // TokenUpdate may have replaced them. A call after the flush opens a new
  // window rather than joining a request already sent: that push may have
  // reached the device before the caller queued its command.
  #join(d: PushTarget): Promise<PushResult> {
    if (!this.#window) {
      this.#window = new Map();
      this.#windowTimer = setTimeout(() => this.#flush(), this.#coalesceMs);
    }
    const waiting = this.#window.get(d.deviceId);
    if (waiting) {
      waiting.device = d;
      return waiting.result;
    }
    let resolve!: (r: PushResult) => void;
    const result = new Promise<PushResult>((r) => (resolve = r));
    this.#window.set(d.deviceId, { device: d, result, resolve });
    return result;
  }

  #flush(): void {
    const batch = this.#window;
    clearTimeout(this.#windowTimer);
    this.#window = undefined;
    if (!batch) return;
    const job = Promise.all(
      [...batch.values()].map(async (w) => {
        const r = await this.#deliver(w.device).catch((e: unknown): PushResult => ({ deviceId: w.device.deviceId, status: 'failed', reason: errorReason(e) }));
        w.resolve(r);
        return r;
      }),
    ).then((results) => this.#summarize(results));
    this.#inFlight.add(job);
    void job.finally(() => this.#inFlight.delete(job));
  }

  async #deliver(d: PushTarget): Promise<PushResult> {
    if (!TOKEN_RE.test(d.token)) return { deviceId: d.deviceId, status: 'failed', reason: 'InvalidToken' };
    if (!d.pushMagic) return { deviceId: d.deviceId, status: 'failed', reason: 'MissingPushMagic' };
    const body = JSON.stringify({ mdm: d.pushMagic });
    // Absolute, and fixed for every attempt: the push's lifetime starts when it was asked for.
    // 0 is APNs' own "deliver now or never".
    const expiration = this.#expirationSeconds === 0 ? 0 : Math.floor(this.#now() / 1000) + this.#expirationSeconds;
    for (let attempt = 1; ; attempt++) {
      const a = await this.#attempt(d, body, expiration);
      if (a.kind === 'final' || attempt >= this.#attempts) return a.result;
      if (this.#closing.signal.aborted) return { ...a.result, status: 'failed', reason: 'ClientClosed' };
      if (a.kind === 'expired-token') {
        // The cause is fixed by a new token, not by waiting.
        this.#tokens?.expire(a.jwt);
        continue;
      }
      const backoff = this.#random() * Math.min(this.#maxMs, this.#baseMs * 2 ** (attempt - 1));
      if (a.retryAfterMs !== undefined && a.retryAfterMs > this.#maxMs) return a.result;
      await this.#sleep(Math.max(backoff, a.retryAfterMs ?? 0), this.#closing.signal);
      if (this.#closing.signal.aborted) return { ...a.result, status: 'failed', reason: 'ClientClosed' };
    }
  }

  async #attempt(d: PushTarget, body: string, expiration: number): Promise<Attempt> {
    const failed = (reason: string, httpStatus?: number): PushResult => ({ deviceId: d.deviceId, status: 'failed', reason, ...(httpStatus !== undefined ? { httpStatus } : {}) });
    const release = await this.#slots.acquire();
    try {
      const jwt = this.#tokens ? await this.#tokens.get() : undefined;
      let res: Response;
      try {
        const session = await this.#pool.session();
        res = await request(session, this.#timeoutMs, {
          ':method': 'POST',
          ':path': `/3/device/${d.token}`,
          'apns-push-type': 'mdm',
          'apns-topic': this.#o.topic,
          'apns-priority': '10',
          'apns-expiration': String(expiration),
          'content-type': 'application/json',
          ...(jwt ? { authorization: `bearer ${jwt}` } : {}),
        }, body);
      } catch (e) {
        // Refused streams after GOAWAY, resets, timeouts: the next attempt takes a fresh session.
        return { kind: 'retry', result: failed(errorReason(e)) };
      }
      const apnsId = header(res.headers, 'apns-id');
      const reason = parseReason(res.body);
      const withId = (r: PushResult): PushResult => (apnsId ? { ...r, apnsId } : r);
      if (res.status === 200) return { kind: 'final', result: withId({ deviceId: d.deviceId, status: 'sent', httpStatus: 200 }) };
      const result = withId(failed(reason.reason ?? `HTTP ${res.status}`, res.status));
      if (res.status === 410) {
        return { kind: 'final', result: { ...result, status: 'unregistered', ...(reason.timestamp !== undefined ? { unregisteredAt: reason.timestamp } : {}) } };
      }
      if (res.status === 403 && reason.reason === 'ExpiredProviderToken' && jwt) return { kind: 'expired-token', result, jwt };
      if (res.status === 429 || res.status >= 500) {
        const retryAfterMs = parseRetryAfter(header(res.headers, 'retry-after'), this.#now());
        return { kind: 'retry', result, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
      }
      return { kind: 'final', result };
    } finally {
      release();
    }
  }

  // One line per batch and reason, not per device: a fleet-wide mistake
  // would otherwise write ten thousand identical warnings.
  #summarize(results: PushResult[]): void {
    const byReason = new Map<string, PushResult[]>();
    for (const r of results) {
      if (r.status !== 'failed') continue;
      const key = r.reason ?? 'unknown';
      byReason.set(key, [...(byReason.get(key) ?? []), r]);
    }
    for (const [reason, rs] of byReason) {
      const fields = { reason, count: rs.length, httpStatus: rs[0]?.httpStatus, devices: rs.slice(0, 5).map((r) => r.deviceId), topic: this.#o.topic, url: this.#o.url ?? APNS_PRODUCTION };
      if (CONFIG_REASONS.has(reason)) {
        // Not pruned: a topic that does not match the certificate, or a sandbox
        // token sent to production (or back), makes every token look bad at once.
        this.#o.log.warn(`APNs refused ${rs.length} push(es) with ${reason}; tokens are kept, since this is often a wrong push topic or APNs environment (production vs sandbox) rather than bad devices`, fields);
      } else {
        this.#o.log.warn(`APNs push failed for ${rs.length} device(s): ${reason}`, fields);
      }
    }
  }
}

interface Waiting {
  device: PushTarget;
  result: Promise<PushResult>;
  resolve: (r: PushResult) => void;
}

// ---- provider tokens ----------------------------------------------------------

/**
 * One ES256 JWT shared by every request, replaced once it is 20 minutes old
 * (APNs answers 429 TooManyProviderTokenUpdates to faster changes and 403
 * ExpiredProviderToken after an hour), or earlier when APNs calls it expired.
 */
class ProviderTokens {
  readonly #key: KeyObject;
  #current: { jwt: string; issuedAt: number } | undefined;
  #minting: Promise<string> | undefined;

  constructor(
    private readonly auth: { keyPem: string; keyId: string; teamId: string },
    private readonly now: () => number,
    private readonly log: ApnsLog,
  ) {
    // Read the key now, so a wrong one stops start-up instead of every push.
    let key: KeyObject;
    try {
      key = createPrivateKey(auth.keyPem);
    } catch (e) {
      throw new Error(`APNs signing key cannot be read: ${(e as Error).message}`, { cause: e });
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('APNs signing key must be an EC P-256 key (the .p8 file)');
    if (!auth.keyId || !auth.teamId) throw new Error('APNs token auth needs keyId and teamId');
    this.#key = key;
  }

  async get(): Promise<string> {
    const now = this.now();
    if (this.#current && now - this.#current.issuedAt < PROVIDER_TOKEN_REFRESH_MS) return this.#current.jwt;
    // Concurrent requests share one new token.
    this.#minting ??= this.#mint(now).finally(() => (this.#minting = undefined));
    return this.#minting;
  }

  /** APNs called this token expired. Only the token that was refused is dropped, so a burst of 403s makes one new token. */
  expire(jwt: string): void {
    if (this.#current?.jwt !== jwt) return;
    const age = this.now() - this.#current.issuedAt;
    if (age < PROVIDER_TOKEN_REFRESH_MS) this.log.warn('APNs called a recent provider token expired; check this host\'s clock', { ageMs: age });
    this.#current = undefined;
  }

  async #mint(now: number): Promise<string> {
    const jwt = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: this.auth.keyId })
      .setIssuer(this.auth.teamId)
      .setIssuedAt(Math.floor(now / 1000))
      .sign(this.#key);
    this.#current = { jwt, issuedAt: now };
    return jwt;
  }
}

// ---- sessions ------------------------------------------------------------------

type TlsOptions = { ca?: string[]; cert?: string; key?: string; passphrase?: string };

/**
 * A fixed number of slots, each holding at most one HTTP/2 session, used in
 * turn. A session leaves its slot when it closes, errors or receives GOAWAY
 * (node then lets its open streams finish); the next request through that
 * slot connects again.
 */
class SessionPool {
  readonly #slots: Array<{ session?: ClientHttp2Session; connecting?: Promise<ClientHttp2Session> }>;
  #next = 0;
  #closed = false;

  constructor(
    private readonly origin: string,
    private readonly tls: TlsOptions,
    size: number,
    private readonly timeoutMs: number,
    private readonly log: ApnsLog,
  ) {
    this.#slots = Array.from({ length: size }, () => ({}));
  }

  session(): Promise<ClientHttp2Session> {
    if (this.#closed) return Promise.reject(new Error('ClientClosed'));
    const slot = this.#slots[this.#next++ % this.#slots.length]!;
    const s = slot.session;
    if (s && !s.closed && !s.destroyed) return Promise.resolve(s);
    slot.session = undefined;
    slot.connecting ??= this.#connect(slot).finally(() => (slot.connecting = undefined));
    return slot.connecting;
  }

  #connect(slot: { session?: ClientHttp2Session }): Promise<ClientHttp2Session> {
    return new Promise((resolve, reject) => {
      const s = connect(this.origin, this.tls);
      const leave = () => {
        if (slot.session === s) slot.session = undefined;
      };
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error('Timeout'));
      }, this.timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        slot.session = s;
        resolve(s);
      });
      s.on('error', (e) => {
        clearTimeout(timer);
        leave();
        this.log.warn('APNs connection error', { error: errorReason(e), message: e.message });
        reject(e);
      });
      s.on('goaway', (code) => {
        leave();
        this.log.info('APNs sent GOAWAY; reconnecting for new requests', { errorCode: code });
      });
      s.on('close', () => {
        clearTimeout(timer);
        leave();
        reject(new Error('SessionClosed'));
      });
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const open = this.#slots.flatMap((slot) => [slot.session, slot.connecting]);
    const sessions = await Promise.all(open.map((p) => Promise.resolve(p).catch(() => undefined)));
    await Promise.all(
      [...new Set(sessions)].map((s) => (s && !s.closed ? new Promise<void>((r) => s.close(() => r())) : undefined)),
    );
  }
}

interface Response {
  status: number;
  headers: IncomingHttpHeaders & IncomingHttpStatusHeader;
  body: string;
}

function request(session: ClientHttp2Session, timeoutMs: number, headers: Record<string, string>, body: string): Promise<Response> {
  return new Promise((resolve, reject) => {
    // request() throws at once on a session that is closing or destroyed.
    const stream = session.request(headers);
    let head: (IncomingHttpHeaders & IncomingHttpStatusHeader) | undefined;
    let text = '';
    const timer = setTimeout(() => {
      stream.close(constants.NGHTTP2_CANCEL);
      // A connection that stops answering (a NAT that forgot it) looks like
      // this: no new streams on it; it ends when its open streams have.
      session.close();
      reject(new Error('Timeout'));
    }, timeoutMs);
    stream.setEncoding('utf8');
    stream.on('response', (h) => (head = h));
    stream.on('data', (chunk: string) => {
      if (text.length < MAX_RESPONSE_BODY) text += chunk;
    });
    stream.on('end', () => {
      clearTimeout(timer);
      if (head) resolve({ status: Number(head[':status']), headers: head, body: text });
      else reject(new Error('NoResponse'));
    });
    stream.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    stream.on('close', () => {
      clearTimeout(timer);
      // After end or error this does nothing; otherwise the stream was reset (e.g. REFUSED_STREAM after GOAWAY).
      reject(new Error(`StreamClosed(${stream.rstCode})`));
    });
    stream.end(body);
  });
}

// ---- small helpers ---------------------------------------------------------------

function header(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function parseReason(body: string): { reason?: string; timestamp?: number } {
  if (!body) return {};
  try {
    const v = JSON.parse(body) as unknown;
    if (!v || typeof v !== 'object') return {};
    const { reason, timestamp } = v as Record<string, unknown>;
    return { ...(typeof reason === 'string' ? { reason } : {}), ...(typeof timestamp === 'number' ? { timestamp } : {}) };
  } catch {
    return {};
  }
}

/** Retry-After as seconds or an HTTP date, in milliseconds from now. */
export function parseRetryAfter(v: string | undefined, now: number): number | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function errorReason(e: unknown): string {
  if (e && typeof e === 'object' && 'code' in e && typeof e.code === 'string') return e.code;
  return e instanceof Error ? e.message : String(e);
}

/** Warns about the classic push-certificate outages: a topic that is not the certificate's UID, an expired certificate. */
function checkPushCertificate(certPem: string, topic: string, now: number, log: ApnsLog): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (e) {
    throw new Error(`APNs push certificate cannot be read: ${(e as Error).message}`, { cause: e });
  }
  const uid = /^UID=(.*)$/m.exec(cert.subject)?.[1];
  if (uid !== undefined && uid !== topic) log.warn('APNs topic is not the push certificate\'s UID; every push will fail', { topic, certificateUid: uid });
  if (Date.parse(cert.validTo) <= now) log.warn('APNs push certificate has expired; renew it at identity.apple.com with the same Apple ID', { validTo: cert.validTo });
}

/** Limits requests in flight; waiters are served in order. */
class Semaphore {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(size: number) {
    this.#free = Math.max(1, size);
  }
  async acquire(): Promise<() => void> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((r) => this.#waiting.push(r));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    };
  }
}
