// `muster devices list|show`: the fleet as the controller sees it, through
// the admin API: what each device should have and whether it does.
import { Command, Option } from 'commander';
import { CliError, EXIT, paintFor, println, table, type CliIO } from '../io.js';
import { callApi, withServerOptions } from './rollout.js';

interface DeviceRow {
  id?: string;
  deviceId?: string;
  platform?: string;
  model?: string | null;
  osVersion?: string | null;
  lastSeenAt?: string | null;
  rollouts?: string[];
  detail?: string;
}

interface DeviceDetail {
  device: { id: string; platform: string; serialNumber: string | null; model: string | null; osVersion: string | null; labels: Record<string, string>; attributes: Record<string, string>; lastSeenAt: string | null };
  sync: string;
  assignments: Array<{ rollout: string; revision: number; bundleHash: string; bucket: number; sync: string; detail: string }>;
  commands: Array<{ uuid: string; type: string; state: string; attempts: number; lastError: string | null; createdAt: string }>;
}

export function registerDevices(program: Command, io: CliIO): void {
  const devices = program.command('devices').description('The fleet: devices, what they should have, and whether they do');
  withServerOptions(devices.command('list'))
    .description('List devices, or those in one sync state')
    .addOption(new Option('--sync <state>', 'only devices with an assignment in this state').choices(['Synced', 'OutOfSync', 'Pending', 'Failed']))
    .addOption(new Option('--platform <platform>', 'only this platform').choices(['apple', 'windows', 'android', 'agent']))
    .option('--limit <n>', 'at most this many (1–1000)', '100')
    .option('--after <id>', 'continue after this device id (pagination)')
    .addHelpText('after', '\nExamples:\n  $ muster devices list --sync Failed\n  $ muster devices list --platform apple --limit 1000 --output json')
    .action(async (o: { sync?: string; platform?: string; limit: string; after?: string; output: 'text' | 'json'; server?: string; token?: string }) => {
      if (!/^\d+$/.test(o.limit)) throw new CliError('--limit: a number', EXIT.usage);
      const q = new URLSearchParams({ limit: o.limit, ...(o.sync ? { sync: o.sync } : {}), ...(o.platform ? { platform: o.platform } : {}), ...(o.after ? { after: o.after } : {}) });
      const rows = (await callApi(io, o, 'GET', `/devices?${q}`)) as DeviceRow[];
      if (o.output === 'json') return void println(io.stdout, JSON.stringify(rows, null, 2));
      if (rows.length === 0) return void println(io.stderr, 'no devices');
      const paint = paintFor(io.stdout, io.env);
      if (o.sync) println(io.stdout, table([['DEVICE', 'ROLLOUTS', 'DETAIL'], ...rows.map((r) => [r.deviceId!, (r.rollouts ?? []).join(','), r.detail ?? ''])], paint));
      else println(io.stdout, table([['DEVICE', 'PLATFORM', 'MODEL', 'OS', 'LAST SEEN'], ...rows.map((r) => [r.id!, r.platform ?? '', r.model ?? '', r.osVersion ?? '', r.lastSeenAt ?? 'never'])], paint));
    });
  withServerOptions(devices.command('show'))
    .description('One device: attributes, assignments with sync state, recent commands')
    .argument('<id>', 'the device id')
    .addHelpText('after', '\nExample:\n  $ muster devices show sim-00042')
    .action(async (id: string, o: { output: 'text' | 'json'; server?: string; token?: string }) => {
      const d = (await callApi(io, o, 'GET', `/devices/${encodeURIComponent(id)}`)) as DeviceDetail;
      if (o.output === 'json') return void println(io.stdout, JSON.stringify(d, null, 2));
      const paint = paintFor(io.stdout, io.env);
      const colour = d.sync === 'Synced' ? paint.green : d.sync === 'Failed' ? paint.red : paint.yellow;
      println(io.stdout, `${paint.bold(d.device.id)}  ${d.device.platform}  ${d.device.model ?? ''} ${d.device.osVersion ?? ''}  ${colour(d.sync)}`);
      println(io.stdout, `  labels: ${Object.entries(d.device.labels).map(([k, v]) => `${k}=${v}`).join(' ') || '-'}   last seen: ${d.device.lastSeenAt ?? 'never'}`);
      if (d.assignments.length) {
        println(io.stdout, table([['ROLLOUT', 'REV', 'BUNDLE', 'BUCKET', 'SYNC', 'DETAIL'], ...d.assignments.map((a) => [a.rollout, String(a.revision), a.bundleHash.slice(7, 19), String(a.bucket), a.sync, a.detail])], paint));
      } else println(io.stdout, '  no bundles assigned');
      if (d.commands.length) {
        println(io.stdout, '');
        println(io.stdout, table([['COMMAND', 'TYPE', 'STATE', 'TRIES', 'ERROR'], ...d.commands.map((c) => [c.uuid.slice(0, 8), c.type, c.state, String(c.attempts), c.lastError ?? ''])], paint));
      }
    });
}
