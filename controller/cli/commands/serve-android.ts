// `muster serve --android-enterprise …`: Android's flags and its mount.
import type { Command } from 'commander';
import { ENTERPRISE_NAME, createAndroidMdm } from '../../../protocols/android/index.js';
import { isEnrollmentGroup } from '../../policy/selector.js';
import { EnrollRequestError, ttlHoursOf } from '../../server/app.js';
import { CliError, EXIT } from '../io.js';
import type { ProtocolMount, ServeContext } from './serve-protocol.js';

export interface AndroidServeOpts {
  androidEnterprise?: string;
  androidKeyFile?: string;
  androidServiceAccount?: string;
  androidPubsubAudience?: string;
  androidPubsubTopic?: string;
  androidSyncEvery: string;
  amapiUrl?: string;
  androidTokenUrl?: string;
  androidJwksUrl?: string;
  amapiRate: string;
}

const PERSONAL_USAGE = { allowed: 'PERSONAL_USAGE_ALLOWED', disallowed: 'PERSONAL_USAGE_DISALLOWED', 'disallowed-userless': 'PERSONAL_USAGE_DISALLOWED_USERLESS' } as const;

/** `900/100s`: at most 900 AMAPI calls in any 100 seconds (Google's default quota is 1,000 per 100 s per project). */
export function parseRateFlag(v: string, ms: (flag: string, v: string) => number): { requests: number; windowMs: number } {
  const m = /^(\d+)\/(.+)$/.exec(v.trim());
  if (!m) throw new CliError('--amapi-rate: CALLS/WINDOW, such as 900/100s', EXIT.usage);
  const requests = Number(m[1]);
  if (!(requests >= 1)) throw new CliError('--amapi-rate: at least one call per window', EXIT.usage);
  return { requests, windowMs: ms('amapi-rate', m[2]!) };
}

export function androidOptions(cmd: Command): Command {
  return cmd
    .option('--android-enterprise <name>', 'enable Android through the Android Management API for this enterprise (enterprises/LC…; muster enroll android --signup makes one)')
    .option('--android-key-file <file>', 'Android: the service-account key (JSON) the API is called with (default: application default credentials)')
    .option('--android-service-account <email>', "Android: the service account Pub/Sub push authenticates as; other tokens are refused")
    .option('--android-pubsub-audience <aud>', 'Android: the audience of the push tokens (default: PUBLIC_URL/android/pubsub)')
    .option('--android-pubsub-topic <topic>', 'Android: point the enterprise\'s notifications at this Pub/Sub topic at start (projects/P/topics/T)')
    .option('--android-sync-every <duration>', 'Android: how often devices.list repairs what notifications missed, and unused policies are deleted (0 turns it off)', '1h')
    .option('--amapi-rate <calls/window>', 'Android: the most AMAPI calls in any window (the project quota)', '900/100s')
    .option('--amapi-url <url>', 'Android: the API root (default https://androidmanagement.googleapis.com/)')
    .option('--android-token-url <url>', "Android: where the service-account key is exchanged for a token (default: the key's token_uri)")
    .option('--android-jwks-url <url>', "Android: the keys Pub/Sub tokens are signed with (default Google's)");
}

export async function mountAndroid(o: AndroidServeOpts, ctx: ServeContext): Promise<ProtocolMount | undefined> {
  if (!o.androidEnterprise) return undefined;
  if (!ENTERPRISE_NAME.test(o.androidEnterprise)) throw new CliError(`--android-enterprise: enterprises/LC…, not "${o.androidEnterprise}"`, EXIT.usage);
  if (!o.androidServiceAccount) throw new CliError('--android-enterprise needs --android-service-account: the Pub/Sub push subscription\'s service account, so nobody else can post reports', EXIT.usage);
  const audience = o.androidPubsubAudience ?? (ctx.publicUrl ? `${ctx.publicUrl.replace(/\/+$/, '')}/android/pubsub` : '');
  if (!audience) throw new CliError('--android-enterprise needs --public-url (the push endpoint) or --android-pubsub-audience', EXIT.usage);
  const syncMs = o.androidSyncEvery === '0' ? 0 : ctx.ms('android-sync-every', o.androidSyncEvery);
  // Read here, once: a missing key file is a usage error naming the flag, not a failure at the first API call.
  const keyJson = o.androidKeyFile ? ctx.readText(o.androidKeyFile, 'android-key-file') : undefined;
  const android = createAndroidMdm(ctx.store, {
    enterprise: o.androidEnterprise,
    ...(keyJson ? { keyJson } : {}),
    ...(o.androidTokenUrl ? { tokenUrl: o.androidTokenUrl } : {}),
    ...(o.amapiUrl ? { rootUrl: o.amapiUrl } : {}),
    rateLimit: parseRateFlag(o.amapiRate, ctx.ms),
    pubsub: { audience, serviceAccountEmail: o.androidServiceAccount, ...(o.androidJwksUrl ? { jwksUrl: o.androidJwksUrl } : {}) },
    secret: ctx.policySecret,
    log: ctx.log,
    syncIntervalMs: syncMs,
  });
  if (o.androidPubsubTopic) await android.configureNotifications(o.androidPubsubTopic);
  return {
    platform: 'android',
    driver: android.driver,
    register: (app) => android.register(app),
    async enroller({ body, actor }) {
      const durationMs = ttlHoursOf(body, 24 * 365 * 10, 24) * 3_600_000;
      const group = body.group;
      if (group !== undefined && !isEnrollmentGroup(group)) throw new EnrollRequestError('group must be a label value (lower-case letters, digits and -, at most 63)');
      if (body.oneTime !== undefined && typeof body.oneTime !== 'boolean') throw new EnrollRequestError('oneTime must be true or false');
      const usage = body.personalUsage;
      if (usage !== undefined && !(typeof usage === 'string' && usage in PERSONAL_USAGE)) throw new EnrollRequestError(`personalUsage must be one of ${Object.keys(PERSONAL_USAGE).join(', ')}`);
      const labels = body.labels;
      if (labels !== undefined && (typeof labels !== 'object' || labels === null || Array.isArray(labels) || Object.values(labels).some((v) => typeof v !== 'string'))) throw new EnrollRequestError('labels must be a map of text');
      const rec = ctx.reconciler;
      const t = await android.enrollmentToken({
        durationMs,
        oneTime: (body.oneTime as boolean | undefined) ?? false,
        ...(group ? { group: group as string } : {}),
        ...(labels ? { labels: labels as Record<string, string> } : {}),
        ...(usage ? { allowPersonalUsage: PERSONAL_USAGE[usage as keyof typeof PERSONAL_USAGE] } : {}),
        // The device starts on the policy its group's rollouts give a new device, not on an empty one.
        ...(rec?.policySet ? { policySet: rec.policySet, rollouts: rec.rolloutStatuses() } : {}),
      });
      await ctx.store.audit.append({ actor: `token:${actor}`, action: 'enrollment.token', subject: 'android', details: { token: t.name, group: group ?? null, oneTime: t.oneTime, expires: t.expires, policy: t.policyId } });
      return { json: { ...t, group: group ?? null } };
    },
    start: () => android.start(),
    close: () => android.close(),
    describe: { enterprise: o.androidEnterprise, pubsub: audience, serviceAccount: o.androidServiceAccount, rate: o.amapiRate },
  };
}
