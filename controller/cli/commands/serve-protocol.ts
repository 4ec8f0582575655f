// What `muster serve` gives each protocol it mounts, and what it gets back.
// Each platform's flags and set-up live in their own module (serve-apple.ts,
// serve-windows.ts, serve-android.ts), so serve.ts stays the loop's wiring.
import { mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadOrCreateCa, type CertificateAuthority } from '../../../protocols/pki/ca.js';
import type { Platform } from '../../policy/types.js';
import type { PlatformDriver } from '../../reconcile/driver.js';
import type { Log, Reconciler } from '../../reconcile/reconciler.js';
import { parseDuration } from '../../rollout/duration.js';
import { EnrollRequestError, type Enroller } from '../../server/app.js';
import { parseRatePerMinute } from '../../server/rate-limit.js';
import type { Store } from '../../store/index.js';
import { CliError, EXIT, type CliIO } from '../io.js';

/** A protocol as serve runs it: its driver, its device-side routes, its enrollment, its timers. */
export interface ProtocolMount {
  platform: Platform;
  driver: PlatformDriver;
  /** Mounts the device-side routes (in their own fastify scope). */
  register(app: FastifyInstance): Promise<void>;
  /** POST /api/v1/enroll/PLATFORM. */
  enroller?: Enroller;
  /** Starts background work (workers, timers) once the server listens. */
  start?(): void;
  /** Stops it and closes long-lived connections. */
  close(): Promise<void>;
  /** What to log once it is enabled. */
  describe: Record<string, unknown>;
}

export interface ServeContext {
  io: CliIO;
  store: Store;
  log: Log & { debug?(msg: string, fields?: Record<string, unknown>): void };
  /** The URL devices reach this server at ('' when not given). */
  publicUrl: string;
  /** The device CA shared by every protocol (SCEP, WSTEP), loaded once from --ca-dir. */
  ca(): Promise<CertificateAuthority>;
  /** A duration flag, or a usage error naming it. */
  ms(flag: string, value: string): number;
  /** A secret from the environment or NAME_FILE. */
  secret(name: string): string | undefined;
  /** `${secret:NAME}` lookup for policy values: MUSTER_SECRET_NAME. */
  policySecret(name: string): string | undefined;
  /** A file a flag names, or a usage error. */
  readText(file: string, flag: string): string;
  /** The reconciler, once serve has built it (enrollment may ask what a new device would get). */
  reconciler?: Reconciler;
  /** `--trusted-proxy`: the TCP peers whose forwarded client-certificate header is believed. */
  trustedProxy?: (address: string) => boolean;
}

/**
 * `device` of an enrollment request: an existing device of this platform that
 * an admin names, so the credential may replace its identity (a reinstalled
 * device). Undefined when the request names none.
 */
export async function approvedDevice(store: Store, body: Record<string, unknown>, platform: Platform): Promise<string | undefined> {
  const id = body.device;
  if (id === undefined) return undefined;
  if (typeof id !== 'string' || !id || id.length > 128) throw new EnrollRequestError('device must be a device id');
  const d = (await store.devices.get(id)) ?? (platform === 'windows' ? await store.devices.get((await store.devices.canonicalId(id, platform)) ?? id) : undefined);
  if (!d) throw new EnrollRequestError(`no device "${id}"`);
  if (d.platform !== platform) throw new EnrollRequestError(`device "${id}" is a ${d.platform} device, not ${platform}`);
  return d.id;
}

/** Variables `${secret:NAME}` never resolves to: Muster's secret key (controller/cli/secret-key.ts). */
export const RESERVED_SECRET_VARIABLES: ReadonlySet<string> = new Set(['MUSTER_SECRET_KEY', 'MUSTER_SECRET_KEY_FILE', 'MUSTER_SECRET_KEY_PREVIOUS', 'MUSTER_SECRET_KEY_PREVIOUS_FILE']);

export const secretFrom = (env: NodeJS.ProcessEnv, name: string): string | undefined => {
  if (env[name]) return env[name];
  const file = env[`${name}_FILE`];
  return file ? readFileSync(file, 'utf8').trim() : undefined;
};

/** A duration flag, or a usage error naming it. */
export function durationFlag(flag: string, value: string): number {
  try {
    return parseDuration(value);
  } catch (e) {
    throw new CliError(`--${flag}: ${(e as Error).message}`, EXIT.usage);
  }
}

/** A rate flag (`600/min`, `10/s`, `off`) as requests per minute, or a usage error naming it. */
export function rateFlag(flag: string, value: string): number {
  try {
    return parseRatePerMinute(value);
  } catch (e) {
    throw new CliError(`--${flag}: ${(e as Error).message}`, EXIT.usage);
  }
}

/** The text of a file a flag names, or a usage error naming the flag. */
export function readFlagFile(io: CliIO, file: string, flag: string): string {
  try {
    return readFileSync(resolve(io.cwd, file), 'utf8');
  } catch (e) {
    throw new CliError(`--${flag}: ${(e as Error).message}`, EXIT.usage);
  }
}

export function serveContext(o: { io: CliIO; store: Store; log: ServeContext['log']; publicUrl?: string; caDir?: string; trustedProxy?: (address: string) => boolean }): ServeContext {
  const { io } = o;
  let ca: Promise<CertificateAuthority> | undefined;
  return {
    io,
    store: o.store,
    log: o.log,
    publicUrl: o.publicUrl ?? '',
    ...(o.trustedProxy ? { trustedProxy: o.trustedProxy } : {}),
    ca() {
      ca ??= (async () => {
        const passphrase = secretFrom(io.env, 'MUSTER_CA_PASSPHRASE');
        if (!passphrase) throw new CliError('device enrollment needs $MUSTER_CA_PASSPHRASE (or _FILE): it encrypts the device CA key at rest', EXIT.usage);
        const caDir = resolve(io.cwd, o.caDir ?? join('.muster', 'ca'));
        mkdirSync(caDir, { recursive: true });
        return loadOrCreateCa({ keyFile: join(caDir, 'ca.key'), certFile: join(caDir, 'ca.pem'), passphrase });
      })();
      return ca;
    },
    ms: durationFlag,
    secret: (name) => secretFrom(io.env, name),
    policySecret: (name) => {
      const v = `MUSTER_SECRET_${name.replace(/[.-]/g, '_').toUpperCase()}`;
      // Muster's own secret key shares the prefix: a policy (anyone who can open a pull request) must never be able to send it to a device.
      return RESERVED_SECRET_VARIABLES.has(v) ? undefined : io.env[v];
    },
    readText: (file, flag) => readFlagFile(io, file, flag),
  };
}
