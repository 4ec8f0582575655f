// `muster serve --apple-topic …`: Apple MDM's flags and its mount.
import type { Command } from 'commander';
import { createAppleMdm } from '../../../protocols/apple/index.js';
import type { DeviceAuthMode } from '../../../protocols/apple/auth.js';
import { EnrollRequestError, ttlHoursOf } from '../../server/app.js';
import { CliError, EXIT } from '../io.js';
import { approvedDevice, type ProtocolMount, type ServeContext } from './serve-protocol.js';

export interface AppleServeOpts {
  appleTopic?: string;
  appleInventoryEvery: string;
  deviceAuth: string;
  apnsCert?: string;
  apnsKey?: string;
  apnsP8?: string;
  apnsKeyId?: string;
  apnsTeamId?: string;
  apnsUrl?: string;
}

export function appleOptions(cmd: Command): Command {
  return cmd
    .option('--apple-topic <topic>', 'enable Apple MDM with this APNs push topic (com.apple.mgmt.External.…); needs $MUSTER_CA_PASSPHRASE and an https --public-url')
    .option('--apple-inventory-every <duration>', 'Apple: ask each device again for its inventory and security state this often (feeds compliance)', '24h')
    .option('--apns-cert <file>', 'APNs: the MDM push certificate (PEM), with --apns-key')
    .option('--apns-key <file>', "APNs: the push certificate's private key (PEM)")
    .option('--apns-p8 <file>', 'APNs token auth: the .p8 key, with --apns-key-id and --apns-team-id')
    .option('--apns-key-id <id>', 'APNs token auth: the key id')
    .option('--apns-team-id <id>', 'APNs token auth: the team id')
    .option('--apns-url <url>', 'APNs server (default: production; https://api.sandbox.push.apple.com for development)')
    .option('--device-auth <modes>', 'how Apple devices prove who they are, in order: signature, header (a proxy in --trusted-proxy forwards the client certificate), mtls', 'signature');
}

export async function mountApple(o: AppleServeOpts, ctx: ServeContext): Promise<ProtocolMount | undefined> {
  if (!o.appleTopic) return undefined;
  const { log } = ctx;
  if (!ctx.publicUrl.startsWith('https://')) throw new CliError('--apple-topic needs --public-url https://…: Apple devices only enroll over https', EXIT.usage);
  const modes = o.deviceAuth.split(',').map((x) => x.trim());
  if (!modes.length || modes.some((x) => !['signature', 'header', 'mtls'].includes(x))) throw new CliError('--device-auth: a comma-separated list of signature, header, mtls', EXIT.usage);
  const inventoryMs = ctx.ms('apple-inventory-every', o.appleInventoryEvery);
  const staticChallenge = ctx.secret('MUSTER_SCEP_CHALLENGE');
  let apns: NonNullable<Parameters<typeof createAppleMdm>[1]['apns']> | undefined;
  if (o.apnsCert || o.apnsKey) {
    if (!o.apnsCert || !o.apnsKey) throw new CliError('--apns-cert and --apns-key go together', EXIT.usage);
    apns = { auth: { kind: 'certificate', certPem: ctx.readText(o.apnsCert, 'apns-cert'), keyPem: ctx.readText(o.apnsKey, 'apns-key') }, ...(o.apnsUrl ? { url: o.apnsUrl } : {}) };
  } else if (o.apnsP8) {
    if (!o.apnsKeyId || !o.apnsTeamId) throw new CliError('--apns-p8 needs --apns-key-id and --apns-team-id', EXIT.usage);
    apns = { auth: { kind: 'token', keyPem: ctx.readText(o.apnsP8, 'apns-p8'), keyId: o.apnsKeyId, teamId: o.apnsTeamId }, ...(o.apnsUrl ? { url: o.apnsUrl } : {}) };
  } else log.warn('Apple MDM without APNs (--apns-cert/--apns-key or --apns-p8): devices get their work only when they check in on their own');
  const apple = await createAppleMdm(ctx.store, {
    ...(apns ? { apns } : {}),
    ca: await ctx.ca(),
    topic: o.appleTopic,
    publicUrl: ctx.publicUrl,
    deviceAuth: modes as DeviceAuthMode[],
    ...(ctx.trustedProxy ? { trustedProxy: ctx.trustedProxy } : {}),
    ...(staticChallenge ? { staticChallenge } : {}),
    secret: ctx.policySecret,
    log,
  });
  let inventoryTimer: NodeJS.Timeout | undefined;
  return {
    platform: 'apple',
    driver: apple.driver,
    register: (app) => apple.register(app),
    async enroller({ body, query, actor }) {
      const ttlMs = ttlHoursOf(body) * 3_600_000;
      if (body.note !== undefined && typeof body.note !== 'string') throw new EnrollRequestError('note must be text');
      const note = `${(body.note as string | undefined) ?? ''} (by ${actor})`.trim();
      const device = await approvedDevice(ctx.store, body, 'apple');
      const opts = { ttlMs, note, ...(device ? { device } : {}) };
      if (query.link === '1') return { json: { url: await apple.enrollmentLink(opts) } };
      const p = await apple.enrollmentProfile(opts);
      return { file: { bytes: p.bytes, contentType: p.contentType, filename: 'muster-enroll.mobileconfig' } };
    },
    start() {
      // Checked often, acted on per device once its inventory is older than the interval.
      inventoryTimer = setInterval(() => void apple.refreshInventory(inventoryMs).catch((e: Error) => log.warn('inventory refresh failed', { error: e.message })), Math.min(3_600_000, Math.max(10_000, inventoryMs / 4)));
      inventoryTimer.unref();
    },
    async close() {
      if (inventoryTimer) clearInterval(inventoryTimer);
      await apple.close();
    },
    describe: { topic: o.appleTopic, ca: apple.ca.fingerprint, deviceAuth: modes },
  };
}
