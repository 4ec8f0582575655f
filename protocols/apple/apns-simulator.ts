// A stand-in for Apple's push service, for simulated devices: an HTTP/2 TLS
// server that takes what Muster's APNs client sends (POST /3/device/<token>,
// apns-push-type mdm, the topic, {"mdm": PushMagic}, a provider token or a
// client certificate) and makes the simulated device with that token connect,
// as a real device does when its push arrives. Unknown tokens get 410
// Unregistered, as Apple answers for an uninstalled app.
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createSecureServer, type Http2SecureServer, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { compactVerify, importSPKI } from 'jose';

/** What the push service needs of a device: its token, and what to do when pushed. */
export interface Pushable {
  readonly pushToken: string;
  readonly pushMagic: string;
  /** Connects to the MDM server (one at a time; a push during a connection asks for one more after it). */
  connect(): Promise<unknown>;
}

export interface SimulatedApnsOptions {
  /** TLS identity of the server (its certificate must be trusted by the client, e.g. NODE_EXTRA_CA_CERTS). */
  certPem: string;
  keyPem: string;
  topic: string;
  /** Token auth: the provider key's public half (PEM), to check each request's ES256 JWT. */
  providerPublicKeyPem?: string;
  log?: (msg: string) => void;
}

export class SimulatedApns {
  private server?: Http2SecureServer;
  private readonly devices = new Map<string, Pushable>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  /** Pushes accepted, and refused with their reasons (for tests). */
  readonly accepted: string[] = [];
  readonly refused: Array<{ status: number; reason: string }> = [];
  readonly errors: Error[] = [];

  constructor(private readonly o: SimulatedApnsOptions) {}

  register(device: Pushable): void {
    this.devices.set(device.pushToken.toLowerCase(), device);
  }

  async listen(port = 0, host = '127.0.0.1'): Promise<string> {
    const server = createSecureServer({ cert: this.o.certPem, key: this.o.keyPem, allowHTTP1: false });
    server.on('stream', (stream, headers) => void this.handle(stream, headers));
    server.listen(port, host);
    await once(server, 'listening');
    this.server = server;
    return `https://${host}:${(server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** Resolves once no pushed device is still connecting. */
  async idle(): Promise<void> {
    while (this.running.size) await Promise.allSettled([...this.running.values()]);
  }

  private async handle(stream: ServerHttp2Stream, h: IncomingHttpHeaders): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    const reply = (status: number, reason?: string) => {
      if (stream.destroyed || stream.closed) return; // the client gave up (timeout, shutdown)
      if (reason) this.refused.push({ status, reason });
      stream.respond({ ':status': status, 'apns-id': String(h['apns-id'] ?? randomUUID()), ...(reason ? { 'content-type': 'application/json' } : {}) });
      stream.end(reason ? JSON.stringify({ reason, ...(status === 410 ? { timestamp: Date.now() } : {}) }) : undefined);
    };
    const m = /^\/3\/device\/([0-9a-fA-F]+)$/.exec(String(h[':path']));
    if (h[':method'] !== 'POST' || !m) return reply(405, 'MethodNotAllowed');
    if (h['apns-push-type'] !== 'mdm') return reply(400, 'InvalidPushType');
    if (h['apns-topic'] !== this.o.topic) return reply(400, 'TopicDisallowed');
    if (this.o.providerPublicKeyPem && !(await this.tokenOk(h.authorization))) return reply(403, 'InvalidProviderToken');
    let magic: unknown;
    try {
      magic = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { mdm?: unknown }).mdm;
    } catch {
      return reply(400, 'PayloadEmpty');
    }
    const device = this.devices.get(m[1]!.toLowerCase());
    if (!device) return reply(410, 'Unregistered');
    reply(200);
    // The device checks the PushMagic, as a real one does: a stranger's push is ignored.
    if (magic !== device.pushMagic) return;
    this.accepted.push(device.pushToken);
    this.poke(device);
  }

  private async tokenOk(authorization: string | undefined): Promise<boolean> {
    const jwt = /^bearer (.+)$/i.exec(authorization ?? '')?.[1];
    if (!jwt) return false;
    try {
      await compactVerify(jwt, await importSPKI(this.o.providerPublicKeyPem!, 'ES256'));
      return true;
    } catch {
      return false;
    }
  }

  /** One connection per device at a time; pushes meanwhile fold into one more. */
  private poke(device: Pushable): void {
    const key = device.pushToken;
    if (this.running.has(key)) {
      this.again.add(key);
      return;
    }
    const run = (async () => {
      do {
        this.again.delete(key);
        try {
          await device.connect();
        } catch (e) {
          this.errors.push(e as Error);
          this.o.log?.(`simulated device ${key.slice(0, 8)}… failed to connect: ${(e as Error).message}`);
        }
      } while (this.again.has(key));
    })().finally(() => this.running.delete(key));
    this.running.set(key, run);
  }
}
