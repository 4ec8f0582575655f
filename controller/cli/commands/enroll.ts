// `muster enroll apple`: a signed enrollment profile from a running controller,
// with a fresh one-time SCEP challenge inside.
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command } from 'commander';
import { CliError, EXIT, println, type CliIO } from '../io.js';

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
}
