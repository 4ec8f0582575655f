// `muster enroll apple|windows|android`: what enrolls a device, from a running
// controller: a signed profile with a one-time SCEP challenge (Apple), a
// credential for Settings › Access work or school (Windows), an enrollment
// token with its QR code (Android).
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { parseDuration } from '../../rollout/duration.js';
import { CliError, EXIT, println, type CliIO } from '../io.js';
import { Amapi } from '../../../protocols/android/client.js';
import { finishSignup, qrForTerminal, qrToPng, startSignup, type EnrollmentTokenResult } from '../../../protocols/android/enroll.js';
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
    .option('--device <udid>', 're-enroll this existing device (e.g. reinstalled): the profile may replace its current identity, and enrolls no other device (admin token)')
    .option('--server <url>', 'the controller (default: $MUSTER_SERVER or http://127.0.0.1:8080)')
    .option('--token <token>', 'admin API token with scope operate (default: $MUSTER_TOKEN)')
    .addHelpText(
      'after',
      `
Open the file on the device (or AirDrop it) and install it in Settings, or
send the person a --link: it serves the profile once.

A device that is still enrolled cannot be enrolled again with an ordinary
profile (that would let anyone take it over): retire it first (muster devices
retire UDID), or give --device UDID to approve its return.

Examples:
  $ muster enroll apple --out alice-macbook.mobileconfig --note "Alice's MacBook"
  $ muster enroll apple --link --ttl 4 --note "Bob's iPad"
  $ muster enroll apple --device 00008103-000A1D2E3F40801E --note "reinstalled"`,
    )
    .action(async (o: { out: string; link?: boolean; ttl: string; note?: string; device?: string; server?: string; token?: string }) => {
      const ttlHours = Number(o.ttl);
      if (!(ttlHours > 0)) throw new CliError('--ttl: a number of hours', EXIT.usage);
      const base = (o.server ?? io.env.MUSTER_SERVER ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
      const token = o.token ?? io.env.MUSTER_TOKEN;
      if (!token) throw new CliError('no token: pass --token or set MUSTER_TOKEN (muster token create --scope operate)', EXIT.usage);
      let res: Response;
      try {
        res = await fetch(`${base}/api/v1/enroll/apple${o.link ? '?link=1' : ''}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ ttlHours, ...(o.note ? { note: o.note } : {}), ...(o.device ? { device: o.device } : {}) }) });
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
  registerEnrollAndroid(enroll, io);
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
  device: string | null;
}

function registerEnrollWindows(enroll: Command, io: CliIO): void {
  enroll
    .command('windows')
    .description('Issue a credential that enrolls Windows PCs through Settings › Accounts › Access work or school')
    .option('--group <name>', 'devices enrolled with it carry muster.dev/enrollment-group=NAME (for DeviceGroup selectors)')
    .option('--ttl <duration>', 'how long it stays valid (24h, 7d …)', '7d')
    .option('--reusable', 'any number of devices may use it until it expires (default: one device)')
    .option('--note <text>', 'who or what it is for, kept in the audit log')
    .option('--device <id>', 're-enroll this existing PC (its DeviceID, e.g. after a reinstall): the credential may replace its current identity, and enrolls no other PC (admin token)')
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

A PC that is still enrolled cannot be enrolled again with an ordinary
credential (that would let anyone holding one take it over): retire it first
(muster devices retire ID), or give --device ID to approve its return.

Examples:
  $ muster enroll windows --group pilot --note "Alice's laptop"
  $ muster enroll windows --group kiosks --reusable --ttl 2d --output json
  $ muster enroll windows --device 9A274A7C-97E2-4BAB-9400-C4755647CF43 --note "reimaged"`,
    )
    .action(async (o: { group?: string; ttl: string; reusable?: boolean; note?: string; device?: string; server?: string; token?: string; output: 'text' | 'json' }) => {
      const ttlHours = hoursOf('ttl', o.ttl);
      if (o.device && o.reusable) throw new CliError('--device and --reusable do not go together: a credential for one device works once', EXIT.usage);
      const c = (await callApi(io, o, 'POST', '/enroll/windows', { ttlHours, oneTime: !o.reusable, ...(o.group ? { group: o.group } : {}), ...(o.note ? { note: o.note } : {}), ...(o.device ? { device: o.device } : {}) })) as WindowsCredentialJson;
      if (o.output === 'json') return void println(io.stdout, JSON.stringify(c, null, 2));
      const uses = c.oneTime ? 'one device' : 'any number of devices';
      println(io.stdout, `Windows enrollment${c.group ? ` into group ${c.group}` : ''} — ${c.device ? `only PC ${c.device}` : uses}, valid until ${c.expiresAt}`);
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

type AndroidTokenJson = EnrollmentTokenResult & { group: string | null };

function labelsFlag(list: string[] | undefined): Record<string, string> | undefined {
  if (!list?.length) return undefined;
  const out: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i < 1) throw new CliError(`--label: KEY=VALUE, not "${kv}"`, EXIT.usage);
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

function registerEnrollAndroid(enroll: Command, io: CliIO): void {
  enroll
    .command('android')
    .description('Create an Android enrollment token (link and QR code), or bind Muster to a new Android Enterprise with --signup')
    .option('--group <name>', 'devices enrolled with it carry muster.dev/enrollment-group=NAME (for DeviceGroup selectors), and start on the policy that group gets')
    .option('--label <key=value...>', 'labels the enrolled devices get')
    .option('--one-time', 'one device only (default: any number until it expires)')
    .option('--duration <duration>', 'how long the token stays valid (1h, 7d …)', '24h')
    .addOption(new Option('--personal-usage <mode>', 'personal use of company devices / work profiles').choices(['allowed', 'disallowed', 'disallowed-userless']))
    .option('--qr-png <file>', 'also write the QR code as a PNG (for printing, or a screen at the setup desk)')
    .option('--server <url>', 'the controller (default: $MUSTER_SERVER or http://127.0.0.1:8080)')
    .option('--token <token>', 'admin API token with scope operate (default: $MUSTER_TOKEN)')
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('--signup', 'instead: create a new Android Enterprise through Google (needs --project and --key-file)')
    .option('--project <id>', 'signup: the Google Cloud project of the service account')
    .option('--key-file <file>', 'signup: the service-account key (JSON)')
    .option('--display-name <name>', 'signup: the enterprise name shown to users')
    .option('--pubsub-topic <topic>', 'signup: send device notifications to this Pub/Sub topic (projects/P/topics/T)')
    .option('--callback-port <port>', 'signup: the local port Google sends the browser back to (default: any free one)', '0')
    .option('--signup-name <name>', 'signup, second half: the signupUrls/… name printed before (when the browser was elsewhere)')
    .option('--enterprise-token <token>', 'signup, second half: the enterpriseToken Google added to the callback URL')
    .option('--amapi-url <url>', 'signup: the API root (default Google\'s)')
    .option('--token-url <url>', "signup: where the key is exchanged for a token (default: the key's token_uri)")
    .addHelpText(
      'after',
      `
Give the person the link, or show the QR code at the device's first screen
(tap the welcome screen six times). A device with the token enrolls into the
enterprise, and Muster moves it to its policy at its first report.

Examples:
  $ muster enroll android --group warehouse --duration 7d --qr-png warehouse.png
  $ muster enroll android --group exec --one-time --personal-usage allowed
  $ muster enroll android --signup --project acme-mdm --key-file sa.json --display-name "Acme"`,
    )
    .action(async (o: { group?: string; label?: string[]; oneTime?: boolean; duration: string; personalUsage?: string; qrPng?: string; server?: string; token?: string; output: 'text' | 'json'; signup?: boolean; project?: string; keyFile?: string; displayName?: string; pubsubTopic?: string; callbackPort: string; signupName?: string; enterpriseToken?: string; amapiUrl?: string; tokenUrl?: string }) => {
      if (o.signup) return androidSignup(io, o);
      const labels = labelsFlag(o.label);
      const t = (await callApi(io, o, 'POST', '/enroll/android', { ttlHours: hoursOf('duration', o.duration), oneTime: !!o.oneTime, ...(o.group ? { group: o.group } : {}), ...(labels ? { labels } : {}), ...(o.personalUsage ? { personalUsage: o.personalUsage } : {}) })) as AndroidTokenJson;
      if (o.qrPng) {
        const out = resolve(io.cwd, o.qrPng);
        await qrToPng(t.qrCode, out);
        println(io.stderr, `wrote the QR code to ${out}`);
      }
      if (o.output === 'json') return void println(io.stdout, JSON.stringify(t, null, 2));
      println(io.stdout, `Android enrollment token${t.group ? ` for group ${t.group}` : ''} — ${t.oneTime ? 'one device' : 'any number of devices'}${t.expires ? `, valid until ${t.expires}` : ''}`);
      println(io.stdout);
      println(io.stdout, `  Link   ${t.link}`);
      println(io.stdout, `  Token  ${t.value}   (typed as afw#setup, then the token, on some devices)`);
      println(io.stdout);
      io.stdout.write(await qrForTerminal(t.qrCode));
    });
}

async function androidSignup(io: CliIO, o: { project?: string; keyFile?: string; displayName?: string; pubsubTopic?: string; callbackPort: string; signupName?: string; enterpriseToken?: string; amapiUrl?: string; tokenUrl?: string; output: 'text' | 'json' }): Promise<void> {
  if (!o.project || !o.keyFile) throw new CliError('--signup needs --project and --key-file (the service account that will call the API)', EXIT.usage);
  const amapi = new Amapi({ keyFile: resolve(io.cwd, o.keyFile), ...(o.amapiUrl ? { rootUrl: o.amapiUrl } : {}), ...(o.tokenUrl ? { tokenUrl: o.tokenUrl } : {}) });
  const finish = async (signupUrlName: string, enterpriseToken: string) => {
    const e = await finishSignup(amapi, { projectId: o.project!, signupUrlName, enterpriseToken, ...(o.displayName ? { displayName: o.displayName } : {}), ...(o.pubsubTopic ? { pubsubTopic: o.pubsubTopic } : {}) });
    if (o.output === 'json') return void println(io.stdout, JSON.stringify(e, null, 2));
    println(io.stdout, `Created ${e.name}${e.displayName ? ` (${e.displayName})` : ''}.`);
    println(io.stdout, `Serve it with:  muster serve --android-enterprise ${e.name} --android-key-file ${o.keyFile} --android-service-account PUSH_SERVICE_ACCOUNT …`);
  };
  if (o.signupName || o.enterpriseToken) {
    if (!o.signupName || !o.enterpriseToken) throw new CliError('--signup-name and --enterprise-token go together', EXIT.usage);
    return finish(o.signupName, o.enterpriseToken);
  }
  // Google sends the admin's browser back to a callback URL with ?enterpriseToken=…: listen for it here.
  const port = Number(o.callbackPort);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliError('--callback-port: a port number', EXIT.usage);
  const got = new Promise<string>((resolveToken, reject) => {
    const server = createServer((req, res) => {
      const token = new URL(req.url ?? '/', 'http://127.0.0.1').searchParams.get('enterpriseToken');
      if (!token) {
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('waiting for Google to send the browser here with an enterpriseToken\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('Signup received: back to the terminal.\n');
      server.close();
      resolveToken(token);
    });
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      void (async () => {
        try {
          const { port: bound } = server.address() as AddressInfo;
          const s = await startSignup(amapi, { projectId: o.project!, callbackUrl: `http://127.0.0.1:${bound}/android-signup` });
          signupName = s.name;
          println(io.stdout, 'Open this link in a browser on this machine, signed in with the Google account that will own the enterprise, and finish the signup:');
          println(io.stdout, `  ${s.url}`);
          println(io.stderr, `waiting for Google to send the browser back to http://127.0.0.1:${bound}/android-signup … (signup ${s.name}; if the browser is elsewhere, finish later with --signup-name ${s.name} --enterprise-token TOKEN)`);
        } catch (e) {
          server.close();
          reject(e as Error);
        }
      })();
    });
  });
  let signupName = '';
  const token = await got;
  await finish(signupName, token);
}
