// `muster devices list|show|lock|wipe|restart|reset-passcode|refresh|retire`: the
// fleet as the controller sees it, through the admin API: what each device
// should have, whether it does, whether it complies, and the admin actions.
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
  compliance?: { state: string; checks: Array<{ rule: string; bundle: string; severity: string; status: string; detail: string }> };
}

interface ActionOutcome {
  deviceId: string;
  platform: string;
  action: string;
  commands: string[];
  secrets?: Record<string, string>;
}

type ServerOpts = { output: 'text' | 'json'; server?: string; token?: string };

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
      if (d.compliance && d.compliance.checks.length) {
        const c = d.compliance;
        const mark = (st: string) => (st === 'pass' ? paint.green(st) : st === 'fail' ? paint.red(st) : paint.yellow(st));
        println(io.stdout, '');
        println(io.stdout, `  compliance: ${c.state === 'compliant' ? paint.green(c.state) : c.state === 'noncompliant' ? paint.red(c.state) : paint.yellow(c.state)}`);
        println(io.stdout, table([['RULE', 'BUNDLE', 'SEVERITY', 'RESULT', 'DETAIL'], ...c.checks.map((x) => [x.rule, x.bundle, x.severity, mark(x.status), x.detail])], paint));
      }
      if (d.commands.length) {
        println(io.stdout, '');
        println(io.stdout, table([['COMMAND', 'TYPE', 'STATE', 'TRIES', 'ERROR'], ...d.commands.map((c) => [c.uuid.slice(0, 8), c.type, c.state, String(c.attempts), c.lastError ?? ''])], paint));
      }
    });

  const act = async (id: string, action: string, body: Record<string, unknown>, o: ServerOpts) => {
    const r = (await callApi(io, o, 'POST', `/devices/${encodeURIComponent(id)}/actions/${action}`, body)) as ActionOutcome;
    if (o.output === 'json') return void println(io.stdout, JSON.stringify(r, null, 2));
    println(io.stdout, `${action}: queued for ${r.deviceId} (${r.platform}), ${r.commands.length} command${r.commands.length === 1 ? '' : 's'}; it runs when the device next connects`);
    // The one place the PIN is shown: it is not in the audit log.
    if (r.secrets?.pin) println(io.stdout, `PIN to unlock the device: ${r.secrets.pin}  (keep it: it is not shown again)`);
  };
  withServerOptions(devices.command('lock'))
    .description('Lock a device now (a Mac asks for a six-digit PIN to unlock; one is made up and printed unless --pin is given)')
    .argument('<id>', 'the device id')
    .option('--message <text>', 'shown on the locked screen')
    .option('--phone <number>', 'a phone number shown on the locked screen')
    .option('--pin <digits>', 'six digits that unlock a Mac')
    .addHelpText('after', '\nExample:\n  $ muster devices lock 00008103-000A1D2E3F40801E --message "Found? Call IT" --phone "+1 555 0100"')
    .action((id: string, o: ServerOpts & { message?: string; phone?: string; pin?: string }) => act(id, 'lock', { message: o.message, phoneNumber: o.phone, pin: o.pin }, o));
  withServerOptions(devices.command('wipe'))
    .description('Erase a device (cannot be undone; needs --yes)')
    .argument('<id>', 'the device id')
    .option('--yes', 'yes, erase it')
    .option('--pin <digits>', 'six digits for a Mac\'s firmware lock after the erase')
    .option('--preserve-data-plan', 'iPhone/iPad: keep the cellular plan')
    .addHelpText('after', '\nExample:\n  $ muster devices wipe 00008103-000A1D2E3F40801E --yes')
    .action((id: string, o: ServerOpts & { yes?: boolean; pin?: string; preserveDataPlan?: boolean }) => {
      if (!o.yes) throw new CliError(`erasing ${id} cannot be undone: run again with --yes`, EXIT.usage);
      return act(id, 'wipe', { confirm: id, pin: o.pin, ...(o.preserveDataPlan ? { preserveDataPlan: true } : {}) }, o);
    });
  withServerOptions(devices.command('retire'))
    .description('Take a device out of management: its certificates are revoked, its queue cleared; it may then enroll again as a new device (needs --yes and an admin token)')
    .argument('<id>', 'the device id')
    .option('--yes', 'yes, retire it')
    .option('--note <text>', 'why, kept in the audit log')
    .addHelpText(
      'after',
      `
Retire a device that was lost, sold or reinstalled without unenrolling. Until
then, no other enrollment may take its id. To let one device come back with its
labels instead, issue it a credential: muster enroll apple|windows --device ID.

Example:
  $ muster devices retire 00008103-000A1D2E3F40801E --yes --note "sold"`,
    )
    .action(async (id: string, o: ServerOpts & { yes?: boolean; note?: string }) => {
      if (!o.yes) throw new CliError(`retiring ${id} ends its management: run again with --yes`, EXIT.usage);
      const r = (await callApi(io, o, 'POST', `/devices/${encodeURIComponent(id)}/retire`, { confirm: id, ...(o.note ? { note: o.note } : {}) })) as { revokedIdentities: number; clearedCommands: number };
      if (o.output === 'json') return void println(io.stdout, JSON.stringify({ deviceId: id, ...r }, null, 2));
      println(io.stdout, `retired ${id}: ${r.revokedIdentities} certificate${r.revokedIdentities === 1 ? '' : 's'} revoked, ${r.clearedCommands} queued command${r.clearedCommands === 1 ? '' : 's'} cleared`);
    });
  for (const [name, what] of [
    ['restart', 'Restart a device'],
    ['reset-passcode', 'Clear or reset the passcode of a device (where the platform can)'],
    ['refresh', 'Ask a device for its inventory and security state now (feeds compliance)'],
  ] as const) {
    withServerOptions(devices.command(name))
      .description(what)
      .argument('<id>', 'the device id')
      .addHelpText('after', `\nExample:\n  $ muster devices ${name} sim-00042`)
      .action((id: string, o: ServerOpts) => act(id, name, {}, o));
  }
}
