// `muster enroll apple|windows|android`: what enrolls a device, from a running
// controller: a signed profile with a one-time SCEP challenge (Apple), a
// credential for Settings › Access work or school (Windows), an enrollment
// token with its QR code (Android).
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { parseDuration } from '../../rollout/duration.js';
import { CliError, EXIT, println, type CliIO } from '../io.js';
import { callApi } from './rollout.js';

export function registerEnroll(program: Command, io: CliIO): void {
  const enroll = program.command('enroll').description('Enroll devices: enrollment profiles and tokens');
  enroll
    .command('apple')
    .description('Download a signed .mobileconfig that enrolls one Mac, iPhone or iPad (its SCEP challenge works once)')
    .option('--out <file>', 'write it here (default: muster-enroll.mobileconfig)', 'muster-enroll.mobileconfig')
    .option('--link', 'print a one-time link to open on the device instead of writing a file')
    .option('--ttl <hours>', 'how long the challenge inside stays valid', '24')
    .option('--note <text>', 'who or what it is for, kept in the audit log')
    .option('--server <url>', 'the controller (default: $MUSTER_SERVER or http://127.0.0.1:8080)')
    .option('--token <token>', 'admin API token with scope operate (default: $MUSTER_TOKEN)')
    .addHelpText(
      'after',
      `
Open the file on the device (or AirDrop it) and install it in Settings, or
send the person a --link: it serves the profile once.

Examples:
  $ muster enroll apple --out alice-macbook.mobileconfig --note "Alice's MacBook"
  $ muster enroll apple --link --ttl 4 --note "Bob's iPad"`,
    )
    .action(async (o: { out: string; link?: boolean; ttl: string; note?: string; server?: string; token?: string }) => {
      const ttlHours = Number(o.ttl);
      if (!(ttlHours > 0)) throw new CliError('--ttl: a number of hours', EXIT.usage);
      const base = (o.server ?? io.env.MUSTER_SERVER ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
      const token = o.token ?? io.env.MUSTER_TOKEN;
      if (!token) throw new CliError('no token: pass --token or set MUSTER_TOKEN (muster token create --scope operate)', EXIT.usage);
      let res: Response;
      try {
        res = await fetch(`${base}/api/v1/enroll/apple${o.link ? '?link=1' : ''}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ ttlHours, ...(o.note ? { note: o.note } : {}) }) });
      } catch (e) {
        throw new CliError(`cannot reach ${base}: ${(e as Error).message}`);
      }
      if (!res.ok) {
        const text = await res.text();
        let msg = text;
        try {
          msg = (JSON.parse(text) as { error?: string }).error ?? text;
        } catch {
          /* not JSON */
        }
        throw new CliError(`enrollment profile: ${res.status} ${msg.slice(0, 200)}`);
      }
      if (o.link) {
        println(io.stdout, ((await res.json()) as { url: string }).url);
        println(io.stderr, `open it on the device within ${ttlHours} h; it works once`);
        return;
      }
      const bytes = Buffer.from(await res.arrayBuffer());
      const out = resolve(io.cwd, o.out);
      writeFileSync(out, bytes, { mode: 0o600 });
      println(io.stderr, `wrote ${out} (${bytes.length} bytes; its challenge is valid for ${ttlHours} h and works once)`);
    });
  registerEnrollWindows(enroll, io);
}

/** Hours from a duration flag such as 24h or 7d (a bare number is hours). */
function hoursOf(flag: string, v: string): number {
  let ms: number;
  try {
    ms = /^\d+(\.\d+)?$/.test(v) ? Number(v) * 3_600_000 : parseDuration(v);
  } catch (e) {
    throw new CliError(`--${flag}: ${(e as Error).message}`, EXIT.usage);
  }
  if (!(ms > 0)) throw new CliError(`--${flag}: a duration above zero, such as 24h or 7d`, EXIT.usage);
  return ms / 3_600_000;
}

interface WindowsCredentialJson {
  username: string;
  password: string;
  serverUrl: string;
  discoveryUrl: string;
  enrollLink: string;
  expiresAt: string;
  oneTime: boolean;
  group: string | null;
}

function registerEnrollWindows(enroll: Command, io: CliIO): void {
  enroll
    .command('windows')
    .description('Issue a credential that enrolls Windows PCs through Settings › Accounts › Access work or school')
    .option('--group <name>', 'devices enrolled with it carry muster.dev/enrollment-group=NAME (for DeviceGroup selectors)')
    .option('--ttl <duration>', 'how long it stays valid (24h, 7d …)', '7d')
    .option('--reusable', 'any number of devices may use it until it expires (default: one device)')
    .option('--note <text>', 'who or what it is for, kept in the audit log')
    .option('--server <url>', 'the controller (default: $MUSTER_SERVER or http://127.0.0.1:8080)')
    .option('--token <token>', 'admin API token with scope operate (default: $MUSTER_TOKEN)')
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'))
    .addHelpText(
      'after',
      `
On the PC, open Settings › Accounts › Access work or school › Enroll only in
device management (or open the printed ms-device-enrollment: link), and give
the email address and password printed here. Windows finds the server from the
address's domain (a DNS name enterpriseenrollment.DOMAIN pointing at Muster);
without it, Windows asks for the server, which is printed too.

Examples:
  $ muster enroll windows --group pilot --note "Alice's laptop"
  $ muster enroll windows --group kiosks --reusable --ttl 2d --output json`,
    )
    .action(async (o: { group?: string; ttl: string; reusable?: boolean; note?: string; server?: string; token?: string; output: 'text' | 'json' }) => {
      const ttlHours = hoursOf('ttl', o.ttl);
      const c = (await callApi(io, o, 'POST', '/enroll/windows', { ttlHours, oneTime: !o.reusable, ...(o.group ? { group: o.group } : {}), ...(o.note ? { note: o.note } : {}) })) as WindowsCredentialJson;
      if (o.output === 'json') return void println(io.stdout, JSON.stringify(c, null, 2));
      const uses = c.oneTime ? 'one device' : 'any number of devices';
      println(io.stdout, `Windows enrollment${c.group ? ` into group ${c.group}` : ''} — ${uses}, valid until ${c.expiresAt}`);
      println(io.stdout);
      println(io.stdout, `  Email address  ${c.username}`);
      println(io.stdout, `  Password       ${c.password}`);
      println(io.stdout, `  Server         ${c.discoveryUrl}   (only asked when enterpriseenrollment.${c.username.split('@')[1]} does not point here)`);
      println(io.stdout);
      println(io.stdout, `  Settings › Accounts › Access work or school › Enroll only in device management, or open on the PC:`);
      println(io.stdout, `  ${c.enrollLink}`);
      println(io.stderr, 'keep the password to hand it over; Muster stores only its digest');
    });
}
