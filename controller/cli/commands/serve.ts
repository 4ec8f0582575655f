// `muster serve`: the controller in one process — the policy source, the
// reconciler, the admin API and the protocol endpoints on one port, on the
// embedded database unless DATABASE_URL says otherwise.
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import type { FastifyInstance } from 'fastify';
import { createDrivers } from '../../drivers.js';
import { Reconciler } from '../../reconcile/reconciler.js';
import { createGithubReporter, parseRepo } from '../../report/github.js';
import { buildApp, type Enroller } from '../../server/app.js';
import { createPino, logOf } from '../../server/log.js';
import { TrustedProxyError, trustedProxies, type TrustedProxies } from '../../server/trusted-proxy.js';
import { Controller } from '../../serve/controller.js';
import { createDirSource } from '../../sources/dir-source.js';
import { createGitSource, redactGitUrl } from '../../sources/git.js';
import type { PolicySource } from '../../sources/source.js';
import { verifyGithubSignature } from '../../sources/webhook.js';
import { SimulatedFleet } from '../../../protocols/simulated/fleet.js';
import { CliError, EXIT, type CliIO } from '../io.js';
import { requireSecretKeys } from '../secret-key.js';
import { openTarget, targetOf } from './db.js';
import { appleOptions, mountApple, type AppleServeOpts } from './serve-apple.js';
import { mountWindows, windowsOptions, type WindowsServeOpts } from './serve-windows.js';
import { androidOptions, mountAndroid, type AndroidServeOpts } from './serve-android.js';
import { durationFlag, rateFlag, readFlagFile, secretFrom, serveContext, type ProtocolMount, type ServeContext } from './serve-protocol.js';
import { shutDown } from './serve-shutdown.js';

interface ServeOpts extends AppleServeOpts, WindowsServeOpts, AndroidServeOpts {
  source: string;
  sourceType?: 'git' | 'dir';
  branch: string;
  databaseUrl?: string;
  dataDir?: string;
  schema?: string;
  listen: string;
  publicUrl?: string;
  tick: string;
  resync: string;
  gitInterval: string;
  gitCache?: string;
  simulate?: string;
  simulateFail?: string[];
  githubRepo?: string;
  githubUrl?: string;
  logFormat?: 'json' | 'pretty';
  logLevel: string;
  caDir?: string;
  tlsCert?: string;
  tlsKey?: string;
  trustedProxy?: string[];
  shutdownGrace: string;
  enrollRate: string;
}

const isGitUrl = (s: string) => /^[a-z][a-z0-9+.-]*:\/\//i.test(s) || /^[\w.-]+@[\w.-]+:/.test(s);
const isGitRepo = (dir: string) => existsSync(join(dir, '.git')) || (existsSync(join(dir, 'HEAD')) && existsSync(join(dir, 'objects')));

export function registerServe(program: Command, io: CliIO): void {
  const cmd = program
    .command('serve')
    .description('Run the controller: watch the policy source, roll out, converge devices, serve the API and device endpoints')
    .option('--source <git-url|dir>', 'a Git URL or repository (https, ssh, file://, a path), or a plain folder', '.')
    .addOption(new Option('--source-type <type>', 'force how --source is read').choices(['git', 'dir']))
    .option('--branch <branch>', 'the Git branch to apply', 'main')
    .option('--database-url <url>', 'PostgreSQL URL (default: $DATABASE_URL; without one, the embedded PGlite database)')
    .option('--data-dir <dir>', 'PGlite data folder (default: $MUSTER_DATA_DIR or .muster/data)')
    .option('--schema <name>', 'PostgreSQL schema holding the tables')
    .option('--listen <host:port>', 'where to listen', '127.0.0.1:8080')
    .option('--public-url <url>', 'the URL devices reach this server at (default: http://LISTEN)')
    .option('--tick <duration>', 'how often rollouts are evaluated and fan-out continues', '5s')
    .option('--resync <duration>', 'how often everything is recomputed from the database', '10m')
    .option('--git-interval <duration>', 'how often the Git source is fetched (a webhook fetches at once)', '30s')
    .option('--git-cache <dir>', 'where Git clones are kept (default: .muster/git)')
    .option('--simulate <n>', 'enroll N simulated devices that answer like a fleet (for trying Muster out)')
    .option('--simulate-fail <bundle@version...>', 'simulated devices reject these bundles (to watch a rollback)')
    .option('--github-repo <owner/name>', 'report commit statuses to this GitHub repository (needs $GITHUB_TOKEN)')
    .option('--github-url <url>', 'GitHub API URL for GitHub Enterprise (default: $GITHUB_API_URL or https://api.github.com)')
    .option('--ca-dir <dir>', 'where the device CA key (encrypted) and certificate live (default: .muster/ca)')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate chain (PEM), and ask clients for certificates (device mTLS)')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option('--trusted-proxy <cidr...>', 'addresses or CIDR ranges of the proxies in front (10.0.0.0/8 fd00::/8): only their connections may forward a device certificate (header device auth) or X-Forwarded-For')
    .option('--shutdown-grace <duration>', 'on SIGTERM, how long requests in flight may take to finish before their connections are closed', '10s')
    .option('--enroll-rate <n/min>', 'most enrollment requests (Apple SCEP and enroll links, Windows enrollment) per minute from one client address, or off', '600/min')
    .addOption(new Option('--log-format <format>', 'log lines as JSON or short human text (default: human on a terminal)').choices(['json', 'pretty']))
    .option('--log-level <level>', 'fatal, error, warn, info, debug', 'info');
  appleOptions(cmd);
  windowsOptions(cmd);
  androidOptions(cmd)
    .addHelpText(
      'after',
      `
Environment: DATABASE_URL, DATABASE_READ_URL, MUSTER_DATA_DIR; MUSTER_GIT_TOKEN (or
MUSTER_GIT_TOKEN_FILE) for HTTPS Git, MUSTER_GIT_SSH_KEY_FILE for SSH;
MUSTER_SECRET_KEY (or _FILE; 32 bytes, base64 or hex) seals device secrets and keys the
audit log, MUSTER_SECRET_KEY_PREVIOUS (or _FILE) lists older keys still accepted; without
it, PGlite keeps a random key in DATA_DIR.key (made on the first start) and PostgreSQL
derives one from MUSTER_CA_PASSPHRASE;
MUSTER_CA_PASSPHRASE (or _FILE) encrypts the SCEP CA key, MUSTER_SCEP_CHALLENGE
(or _FILE) adds a shared challenge besides one-time ones; MUSTER_SECRET_<NAME>
supplies \${secret:NAME} values;
MUSTER_WEBHOOK_SECRET (or _FILE) enables POST /hooks/git; GITHUB_TOKEN for statuses.
Secrets are read from the environment or mounted files and never logged.

Examples:
  $ muster serve --source policies-example --simulate 500          # try it out
  $ muster serve --source https://github.com/acme/device-policy.git --branch main \\
      --listen 0.0.0.0:8080 --public-url https://mdm.acme.com --github-repo acme/device-policy
  $ muster serve --source … --public-url https://mdm.acme.com --tls-cert mdm.pem --tls-key mdm.key \\
      --windows --apple-topic com.apple.mgmt.External.…          # Windows and Apple devices, mTLS here
  $ muster serve … --windows --windows-device-auth header --trusted-proxy 10.0.0.0/8
      # behind a TLS proxy at 10.x that overwrites the Client-Cert header with the device certificate

On SIGTERM or SIGINT serve stops accepting connections, answers 503 on those still
open, lets requests in flight finish for --shutdown-grace, closes what is left, stops
the controller, the protocols and the database (5 s each at most), and exits 0.`,
    )
    .action(async (o: ServeOpts) => {
      const pretty = o.logFormat ? o.logFormat === 'pretty' : !!(io.stdout as { isTTY?: boolean }).isTTY;
      const pino = createPino({ level: o.logLevel, pretty, destination: io.stdout as NodeJS.WritableStream });
      const log = logOf(pino);
      const ms = durationFlag;
      const tickMs = ms('tick', o.tick);
      const resyncMs = ms('resync', o.resync);
      const gitMs = ms('git-interval', o.gitInterval);
      const graceMs = ms('shutdown-grace', o.shutdownGrace);
      const proxies = trustedProxyFlag(o);
      const enrollRatePerMinute = rateFlag('enroll-rate', o.enrollRate);
      const m = /^(.+):(\d{1,5})$/.exec(o.listen);
      if (!m) throw new CliError('--listen: expected HOST:PORT, e.g. 127.0.0.1:8080', EXIT.usage);
      const simulate = o.simulate === undefined ? 0 : Number(o.simulate);
      if (!Number.isInteger(simulate) || simulate < 0 || simulate > 1_000_000) throw new CliError('--simulate: a number of devices (0 to 1,000,000)', EXIT.usage);
      // Each protocol's mount, in order; one that is not enabled by its flags gives undefined.
      const mountsWanted: Array<(ctx: ServeContext) => Promise<ProtocolMount | undefined>> = [(c) => mountApple(o, c), (c) => mountWindows(o, c), (c) => mountAndroid(o, c)];
      const enabling = [o.appleTopic && '--apple-topic', o.windows && '--windows', o.androidEnterprise && '--android-enterprise'].filter(Boolean);
      if (simulate > 0 && enabling.length) throw new CliError(`--simulate stands in for devices on every platform; use it without ${enabling.join(', ')}`, EXIT.usage);

      if (!!o.tlsCert !== !!o.tlsKey) throw new CliError('--tls-cert and --tls-key go together', EXIT.usage);
      const tls = o.tlsCert && o.tlsKey ? { cert: readFlagFile(io, o.tlsCert, 'tls-cert'), key: readFlagFile(io, o.tlsKey, 'tls-key') } : undefined;

      const target = targetOf(io, { ...o, output: 'text' });
      // The key that seals device secrets and keys the audit chain; on PGlite a generated one beside the data works out of the box.
      const secret = requireSecretKeys(io, { ...(target.dataDir ? { dataDir: target.dataDir } : {}), create: true }, 'muster serve needs Muster\'s secret key (it seals device secrets and keys the audit log)');
      const store = await openTarget(target, true, secret.keys);
      log.info('database ready', { database: target.label, migrationsApplied: store.migrations.applied.length, secretKey: secret.keys.current.id, secretKeyFrom: secret.source });

      const sourcePath = resolve(io.cwd, o.source);
      const git = o.sourceType ? o.sourceType === 'git' : isGitUrl(o.source) || (existsSync(sourcePath) && statSync(sourcePath).isDirectory() && isGitRepo(sourcePath));
      let source: PolicySource;
      if (git) {
        const token = secretFrom(io.env, 'MUSTER_GIT_TOKEN');
        const credentials = {
          ...(token ? { token } : {}),
          ...(io.env.MUSTER_GIT_SSH_KEY_FILE ? { sshKeyFile: io.env.MUSTER_GIT_SSH_KEY_FILE } : {}),
        };
        source = createGitSource({
          url: isGitUrl(o.source) ? o.source : sourcePath,
          branch: o.branch,
          cacheDir: resolve(io.cwd, o.gitCache ?? join('.muster', 'git')),
          credentials,
          intervalMs: gitMs,
          log,
        });
      } else {
        if (!existsSync(sourcePath)) throw new CliError(`--source: ${o.source}: no such folder or Git URL`, EXIT.usage);
        source = createDirSource(sourcePath, { intervalMs: Math.min(gitMs, 5_000), onError: (e) => log.warn('reading the policy folder failed', { error: e.message }) });
      }

      let reporter;
      if (o.githubRepo) {
        const token = secretFrom(io.env, 'GITHUB_TOKEN');
        if (!token) throw new CliError('--github-repo needs $GITHUB_TOKEN', EXIT.usage);
        const { owner, repo } = parseRepo(o.githubRepo);
        const baseUrl = o.githubUrl ?? io.env.GITHUB_API_URL;
        reporter = createGithubReporter({ token, owner, repo, ...(baseUrl ? { baseUrl } : {}), log });
      }

      const drivers = createDrivers();
      if (proxies?.everyone.length) log.warn(`--trusted-proxy ${proxies.everyone.join(' ')} trusts every peer: anyone who reaches this listener can forward a device certificate, and so be that device`);
      const trusted = proxies ? { trustedProxy: (address: string) => proxies.has(address) } : {};
      const ctx = serveContext({ io, store, log, ...trusted, ...(o.publicUrl ? { publicUrl: o.publicUrl } : {}), ...(o.caDir ? { caDir: o.caDir } : {}) });
      const mounts: ProtocolMount[] = [];
      for (const mount of mountsWanted) {
        const m = await mount(ctx);
        if (!m) continue;
        mounts.push(m);
        drivers.set(m.platform, m.driver);
        log.info(`${m.platform} MDM enabled`, m.describe);
      }
      const protocols: Array<(app: FastifyInstance) => Promise<void>> = mounts.map((m) => (scope) => m.register(scope));
      const enrollers = new Map(mounts.filter((m) => m.enroller).map((m) => [m.platform, m.enroller!] as [typeof m.platform, Enroller]));
      const reconciler = new Reconciler({ store, drivers, log });
      ctx.reconciler = reconciler;
      const controller = new Controller({ store, source, reconciler, log, tickMs, resyncMs, ...(reporter ? { reporter } : {}) });
      const webhookSecret = secretFrom(io.env, 'MUSTER_WEBHOOK_SECRET');
      const app = await buildApp({
        store,
        reconciler,
        controller,
        drivers,
        logger: pino,
        protocols,
        enrollers,
        enrollRatePerMinute,
        ...(tls ? { https: tls } : {}),
        ...(proxies ? { trustProxy: (address: string) => proxies.has(address) } : {}),
        ...(webhookSecret ? { verifyWebhook: (body, headers) => verifyGithubSignature(webhookSecret, body, headers['x-hub-signature-256'] as string | undefined) } : {}),
      });

      let fleet: SimulatedFleet | undefined;
      if (simulate > 0) {
        const failing = new Set(o.simulateFail ?? []);
        fleet = new SimulatedFleet({
          store,
          fails: (item) => (failing.has(`${item.bundle}@${item.version}`) ? 'simulated device rejected the payload' : undefined),
          // Reports travel as events in the report's own transaction, the way protocol endpoints report.
          publishReports: true,
        });
        await fleet.enroll(simulate);
        log.info('simulated fleet enrolled', { devices: simulate, failing: [...failing] });
      }

      await controller.start();
      for (const m of mounts) m.start?.();
      const address = await app.listen({ host: m[1]!, port: Number(m[2]) });
      log.info('muster is serving', { url: address, source: git ? `${redactGitUrl(o.source)} (${o.branch})` : source.description, database: target.label, ...(proxies ? { trustedProxies: proxies.ranges } : {}) });

      let fleetTimer: NodeJS.Timeout | undefined;
      if (fleet) {
        const f = fleet;
        const loop = () => {
          fleetTimer = setTimeout(() => {
            f.step()
              .catch((e: Error) => log.warn('simulated fleet step failed', { error: e.message }))
              .finally(loop);
          }, Math.max(200, Math.floor(tickMs / 2)));
        };
        loop();
      }

      await new Promise<void>((done) => {
        const stop = (signal: string) => {
          log.info('shutting down', { signal, graceMs });
          if (fleetTimer) clearTimeout(fleetTimer);
          void (async () => {
            const r = await shutDown({
              app,
              graceMs,
              log,
              steps: [
                { name: 'the controller', run: () => controller.stop() },
                // Protocols hold long-lived connections (APNs sessions) that would keep the process alive.
                ...mounts.map((m) => ({ name: `${m.platform} MDM`, run: () => m.close() })),
                { name: 'the database', run: () => store.close() },
              ],
            });
            log.info('shut down', { signal, ms: r.ms, drained: r.drained, connectionsCut: r.connectionsCut, leftBehind: r.stepsCut });
            // Whatever a step left behind (a pool that would not close) must not keep the process alive;
            // unref'd, the timer never delays an exit that happens on its own.
            setTimeout(() => process.exit(), 1_000).unref();
            done();
          })();
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
    });
}

/**
 * `--trusted-proxy`, as ranges (space- or comma-separated, the flag repeatable);
 * header device auth needs it: without a list of the proxies' addresses, the
 * header would be believed from anyone who reaches the listener.
 */
function trustedProxyFlag(o: Pick<ServeOpts, 'trustedProxy' | 'deviceAuth' | 'windowsDeviceAuth'>): TrustedProxies | undefined {
  const ranges = (o.trustedProxy ?? []).flatMap((v) => v.split(/[\s,]+/)).filter(Boolean);
  let proxies: TrustedProxies | undefined;
  try {
    proxies = ranges.length ? trustedProxies(ranges) : undefined;
  } catch (e) {
    if (e instanceof TrustedProxyError) throw new CliError(`--trusted-proxy: ${e.message}`, EXIT.usage);
    throw e;
  }
  const header = (modes: string) => modes.split(',').some((m) => m.trim() === 'header');
  const asking = [header(o.deviceAuth) && '--device-auth header', header(o.windowsDeviceAuth) && '--windows-device-auth header'].filter(Boolean);
  if (asking.length && !proxies) {
    throw new CliError(`${asking.join(' and ')} needs --trusted-proxy CIDR…: the addresses of the proxy that terminates TLS and sets the certificate header (from any other peer the header is refused)`, EXIT.usage);
  }
  return proxies;
}
