// A stand-in for Google Pub/Sub's push delivery, for simulated Android
// fleets: each message goes to the push endpoint over real HTTP in the real
// envelope ({message: {data (base64), attributes: {notificationType},
// messageId, publishTime}, subscription}), with an OIDC token signed RS256 by
// a key whose JWKS this simulator serves (iss https://accounts.google.com,
// aud = the configured audience or the endpoint URL, email = the push service
// account, email_verified). Any answer but 102/200/201/202/204 — or no answer —
// is redelivered with backoff, as Pub/Sub does: delivery is at least once and
// unordered.
import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';

export interface PushSubscription {
  /** The push endpoint, e.g. http://127.0.0.1:PORT/android/pubsub. */
  endpoint: string;
  /** The token audience; default the endpoint URL (Pub/Sub's default). */
  audience?: string;
  /** The service account the subscription authenticates as. */
  serviceAccountEmail: string;
  /** projects/P/subscriptions/S, echoed in every envelope. */
  name?: string;
}

export interface PusherOptions {
  /** First redelivery wait; doubles up to maxBackoffMs. Default 10 ms (simulated time is short). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Deliveries per message before it is dropped (Pub/Sub keeps messages up to 7 days). Default 50. */
  maxAttempts?: number;
  /** Deliveries in flight at once. Default 32. */
  concurrency?: number;
  /** Tokens with another issuer (for tests of refusals). */
  issuer?: string;
}

export interface PushStats {
  published: number;
  delivered: number;
  /** Deliveries answered with something else than an ack (each is redelivered). */
  nacked: number;
  dropped: number;
  /** Messages lost on purpose (loseNext), never delivered. */
  lost: number;
}

const ACK = new Set([102, 200, 201, 202, 204]);

export class PubsubPusher {
  private key?: { privateKey: CryptoKey; jwk: JWK };
  private readonly kid = `sim-${randomUUID().slice(0, 8)}`;
  private seq = 1_000_000_000_000_000n;
  private inflight = 0;
  private readonly queue: Array<() => Promise<void>> = [];
  private readonly pending = new Set<Promise<void>>();
  private lose: Array<(type: string) => boolean> = [];
  private token?: { value: string; exp: number; aud: string };
  readonly stats: PushStats = { published: 0, delivered: 0, nacked: 0, dropped: 0, lost: 0 };
  /** Every delivery attempt's HTTP status (or 0 for no answer), for tests. */
  readonly answers: Array<{ messageId: string; type: string; status: number }> = [];
  subscription?: PushSubscription;

  constructor(private readonly o: PusherOptions = {}) {}

  async init(): Promise<void> {
    const { privateKey, publicKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
    this.key = { privateKey, jwk: { ...(await exportJWK(publicKey)), kid: this.kid, alg: 'RS256', use: 'sig' } };
  }

  /** The JWKS Google serves at /oauth2/v3/certs, for this simulator's key. */
  jwks(): { keys: JWK[] } {
    if (!this.key) throw new Error('PubsubPusher.init() first');
    return { keys: [this.key.jwk] };
  }

  /** A push token as Google signs it (claims overridable for tests of refusals). */
  async sign(claims: Record<string, unknown> = {}, opts: { audience?: string; issuer?: string; expiresInS?: number; key?: CryptoKey; kid?: string } = {}): Promise<string> {
    if (!this.key || !this.subscription) throw new Error('no push subscription');
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ email: this.subscription.serviceAccountEmail, email_verified: true, azp: '1234567890', ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: opts.kid ?? this.kid, typ: 'JWT' })
      .setIssuer(opts.issuer ?? this.o.issuer ?? 'https://accounts.google.com')
      .setAudience(opts.audience ?? this.subscription.audience ?? this.subscription.endpoint)
      .setSubject('112233445566778899')
      .setIssuedAt(now)
      .setExpirationTime(now + (opts.expiresInS ?? 3600))
      .sign(opts.key ?? this.key.privateKey);
  }

  /** Drops the next `n` messages (optionally only of one notification type) without delivering them. */
  loseNext(n: number, type?: string): void {
    for (let i = 0; i < n; i++) this.lose.push((t) => !type || t === type);
  }

  /** The envelope Pub/Sub would push for these attributes and data. */
  envelope(notificationType: string, data: unknown): { messageId: string; body: string } {
    const messageId = String(this.seq++);
    const payload = data === undefined ? '' : Buffer.from(typeof data === 'string' ? data : JSON.stringify(data), 'utf8').toString('base64');
    const publishTime = new Date().toISOString();
    return {
      messageId,
      body: JSON.stringify({
        message: { attributes: { notificationType }, data: payload, messageId, message_id: messageId, publishTime, publish_time: publishTime },
        subscription: this.subscription?.name ?? 'projects/muster-sim/subscriptions/amapi-push',
      }),
    };
  }

  /** Publishes one message: delivered (and redelivered) in the background. */
  publish(notificationType: string, data: unknown): string | undefined {
    if (!this.subscription) return undefined;
    const { messageId, body } = this.envelope(notificationType, data);
    this.stats.published++;
    const drop = this.lose.findIndex((f) => f(notificationType));
    if (drop >= 0) {
      this.lose.splice(drop, 1);
      this.stats.lost++;
      return messageId;
    }
    this.enqueue(() => this.deliver(messageId, notificationType, body, 1));
    return messageId;
  }

  /** Sends a raw body once, with a valid token unless told otherwise; returns the HTTP status. */
  async pushRaw(body: string, o: { token?: string | null; contentType?: string } = {}): Promise<number> {
    if (!this.subscription) throw new Error('no push subscription');
    const token = o.token === undefined ? await this.sign() : o.token;
    const res = await fetch(this.subscription.endpoint, {
      method: 'POST',
      headers: { 'content-type': o.contentType ?? 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body,
    });
    await res.arrayBuffer();
    return res.status;
  }

  private enqueue(job: () => Promise<void>): void {
    const run = async () => {
      this.inflight++;
      try {
        await job();
      } finally {
        this.inflight--;
        const next = this.queue.shift();
        if (next) this.track(next());
      }
    };
    if (this.inflight < (this.o.concurrency ?? 32)) this.track(run());
    else this.queue.push(run);
  }

  private track(p: Promise<void>): void {
    const q = p.catch(() => {}).finally(() => this.pending.delete(q));
    this.pending.add(q);
  }

  private async bearer(): Promise<string> {
    const aud = this.subscription!.audience ?? this.subscription!.endpoint;
    // Google reuses a push token for a while; so does this.
    if (this.token && this.token.aud === aud && this.token.exp > Date.now() + 60_000) return this.token.value;
    const value = await this.sign();
    this.token = { value, exp: Date.now() + 3_600_000, aud };
    return value;
  }

  private async deliver(messageId: string, type: string, body: string, attempt: number): Promise<void> {
    let status: number;
    try {
      const res = await fetch(this.subscription!.endpoint, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${await this.bearer()}` }, body });
      await res.arrayBuffer();
      status = res.status;
    } catch {
      // No answer (refused, reset): redelivered like any other nack.
      status = 0;
    }
    this.answers.push({ messageId, type, status });
    if (ACK.has(status)) {
      this.stats.delivered++;
      return;
    }
    this.stats.nacked++;
    if (attempt >= (this.o.maxAttempts ?? 50)) {
      this.stats.dropped++;
      return;
    }
    const wait = Math.min(this.o.maxBackoffMs ?? 1000, (this.o.backoffMs ?? 10) * 2 ** (attempt - 1));
    await new Promise((r) => setTimeout(r, wait));
    this.enqueue(() => this.deliver(messageId, type, body, attempt + 1));
  }

  /** Resolves once nothing is queued or in flight. */
  async idle(): Promise<void> {
    while (this.pending.size || this.queue.length) await Promise.all([...this.pending]);
  }
}
