// `muster serve --windows`: Windows MDM's flags and its mount.
import type { Command } from 'commander';
import { Option } from 'commander';
import type { WindowsAuthMode } from '../../../protocols/windows/auth.js';
import { DOMAIN } from '../../../protocols/windows/enroll-service.js';
import { createWindowsMdm } from '../../../protocols/windows/index.js';
import { isEnrollmentGroup } from '../../policy/selector.js';
import { DEFAULT_POLL, checkPollSchedule, type PollSchedule } from '../../../protocols/windows/provisioning.js';
import { parseDuration } from '../../rollout/duration.js';
import { EnrollRequestError, ttlHoursOf } from '../../server/app.js';
import { CliError, EXIT } from '../io.js';
import { approvedDevice, type ProtocolMount, type ServeContext } from './serve-protocol.js';

export interface WindowsServeOpts {
  windows?: boolean;
  windowsAuth: 'onpremise' | 'federated';
  windowsDeviceAuth: string;
  windowsProviderId: string;
  windowsPoll: string;
  windowsCertDays: string;
  windowsInventoryEvery: string;
  windowsCredentialDomain?: string;
}

const minutes = (v: string) => Math.floor(parseDuration(v) / 60_000);

/**
 * `3m:15,15m:12,8h`: 15 polls every 3 minutes, then 12 every 15 minutes,
 * then one every 8 hours (the DMClient schedule). The sets may be left out.
 */
export function parsePollFlag(v: string): PollSchedule {
  const parts = v.split(',').map((x) => x.trim());
  const set = (p: string | undefined) => {
    const m = /^([0-9a-z]+):(\d+)$/.exec(p ?? '');
    if (!m) throw new Error(`"${p}" is not EVERY:TIMES, such as 3m:15`);
    return { everyMinutes: minutes(m[1]!), times: Number(m[2]) };
  };
  const then = parts.pop()!;
  if (parts.length > 2) throw new Error('at most two sets before the steady interval: 3m:15,15m:12,8h');
  const none = { everyMinutes: 0, times: 0 };
  return checkPollSchedule({ first: parts[0] ? set(parts[0]) : none, second: parts[1] ? set(parts[1]) : none, thenMinutes: minutes(then), onLogin: true });
}

const formatPoll = (p: PollSchedule) => `${p.first.everyMinutes}m:${p.first.times},${p.second.everyMinutes}m:${p.second.times},${p.thenMinutes}m`;

export function windowsOptions(cmd: Command): Command {
  return cmd
    .option('--windows', 'enable Windows MDM (MS-MDE2 enrollment, OMA-DM); needs $MUSTER_CA_PASSPHRASE and an https --public-url')
    .addOption(new Option('--windows-auth <policy>', 'Windows: how enrolling users sign in: onpremise (email and password in Settings) or federated (a web page asks for the enrollment code)').choices(['onpremise', 'federated']).default('onpremise'))
    .option('--windows-device-auth <modes>', 'Windows: how devices prove who they are on OMA-DM, in order: mtls (needs --tls-cert here), header (a TLS proxy in --trusted-proxy forwards the client certificate)', 'mtls')
    .option('--windows-provider-id <id>', 'Windows: the DMClient provider id devices are enrolled with', 'Muster')
    .option('--windows-poll <schedule>', 'Windows: the poll schedule new devices get, EVERY:TIMES,EVERY:TIMES,STEADY (bundles override it with spec.windows.poll)', formatPoll(DEFAULT_POLL))
    .option('--windows-cert-days <days>', 'Windows: validity of device certificates (renewed automatically before they expire)', '365')
    .option('--windows-inventory-every <duration>', 'Windows: ask each device again for its inventory this often', '24h')
    .option('--windows-credential-domain <domain>', "Windows: the domain of enrollment email addresses (default: --public-url's host); Windows discovers enterpriseenrollment.DOMAIN");
}

export async function mountWindows(o: WindowsServeOpts, ctx: ServeContext): Promise<ProtocolMount | undefined> {
  if (!o.windows) return undefined;
  if (!ctx.publicUrl.startsWith('https://')) throw new CliError('--windows needs --public-url https://…: Windows enrolls only over https', EXIT.usage);
  const modes = o.windowsDeviceAuth.split(',').map((x) => x.trim());
  if (!modes.length || modes.some((x) => !['mtls', 'header'].includes(x))) throw new CliError('--windows-device-auth: a comma-separated list of mtls, header', EXIT.usage);
  let poll: PollSchedule;
  try {
    poll = parsePollFlag(o.windowsPoll);
  } catch (e) {
    throw new CliError(`--windows-poll: ${(e as Error).message}`, EXIT.usage);
  }
  const days = Number(o.windowsCertDays);
  if (!Number.isInteger(days) || days < 2 || days > 3650) throw new CliError('--windows-cert-days: whole days from 2 to 3650', EXIT.usage);
  if (!/^[a-zA-Z0-9-]{1,64}$/.test(o.windowsProviderId)) throw new CliError('--windows-provider-id: letters, digits and -', EXIT.usage);
  // Enrollment email addresses need a domain: Windows discovers the server from it.
  const host = new URL(ctx.publicUrl).hostname;
  const domain = o.windowsCredentialDomain ?? host.replace(/^enterpriseenrollment\./, '');
  if (!DOMAIN.test(domain.toLowerCase())) throw new CliError(`--windows: enrollment addresses need a domain name, and ${o.windowsCredentialDomain ? `"${domain}"` : `--public-url's host "${host}"`} is not one; set --windows-credential-domain`, EXIT.usage);
  const ca = await ctx.ca();
  const windows = createWindowsMdm(ctx.store, {
    ca,
    publicUrl: ctx.publicUrl,
    authPolicy: o.windowsAuth === 'federated' ? 'Federated' : 'OnPremise',
    providerId: o.windowsProviderId,
    deviceAuth: modes as WindowsAuthMode[],
    ...(ctx.trustedProxy ? { trustedProxy: ctx.trustedProxy } : {}),
    poll,
    validityDays: days,
    inventoryMaxAgeMs: ctx.ms('windows-inventory-every', o.windowsInventoryEvery),
    credentialDomain: domain,
    secret: ctx.policySecret,
    log: ctx.log,
  });
  return {
    platform: 'windows',
    driver: windows.driver,
    register: (app) => windows.register(app),
    async enroller({ body, actor }) {
      const ttlMs = ttlHoursOf(body, 24 * 90, 24 * 7) * 3_600_000;
      for (const k of ['group', 'note'] as const) if (body[k] !== undefined && typeof body[k] !== 'string') throw new EnrollRequestError(`${k} must be text`);
      if (body.oneTime !== undefined && typeof body.oneTime !== 'boolean') throw new EnrollRequestError('oneTime must be true or false');
      const group = body.group as string | undefined;
      if (group !== undefined && !isEnrollmentGroup(group)) throw new EnrollRequestError(`group "${group}" is not a label value (lower-case letters, digits and -, at most 63)`);
      const note = `${(body.note as string | undefined) ?? ''} (by ${actor})`.trim();
      const device = await approvedDevice(ctx.store, body, 'windows');
      if (device && body.oneTime === false) throw new EnrollRequestError('a credential for one device works once');
      const c = await windows.issueCredential({ ttlMs, note, oneTime: (body.oneTime as boolean | undefined) ?? true, ...(group ? { group } : {}), ...(device ? { device } : {}) });
      return { json: { username: c.username, password: c.password, serverUrl: ctx.publicUrl, discoveryUrl: c.discoveryUrl, enrollLink: c.enrollLink, expiresAt: c.expiresAt.toISOString(), oneTime: c.oneTime, group: group ?? null, device: device ?? null } };
    },
    async close() {},
    describe: { discovery: windows.urls.discovery, management: windows.urls.management, auth: o.windowsAuth, deviceAuth: modes, poll: formatPoll(poll), ca: ca.fingerprint },
  };
}
