// `muster render BUNDLE --platform P [DIR]`: what a bundle becomes on one
// platform, exactly as the driver compiles it (secret references unresolved).
import { Command, Option } from 'commander';
import { compileDeclarations } from '../../../protocols/apple/declarations.js';
import { renderApple } from '../../../protocols/apple/render.js';
import { renderAndroid, renderAndroidJson, renderAndroidNotes } from '../../../protocols/android/render.js';
import { renderWindows } from '../../../protocols/windows/render.js';
import { prettyXml } from '../../../protocols/windows/xml.js';
import { createDrivers } from '../../drivers.js';
import { formatText } from '../../policy/diagnostics.js';
import type { Platform } from '../../policy/types.js';
import { CliError, EXIT, paintFor, println, type CliIO } from '../io.js';
import { loadTree } from './validate.js';

export function registerRender(program: Command, io: CliIO, setExit: (code: number) => void): void {
  program
    .command('render')
    .description('Print what a bundle becomes on a platform: the Apple profile, the Windows SyncML, the Android policy JSON')
    .argument('<bundle>', 'the PolicyBundle name')
    .argument('[dir]', 'policy folder', '.')
    .addOption(new Option('--platform <platform>', 'the platform to render for').choices(['apple', 'windows', 'android', 'agent']).makeOptionMandatory())
    .option('--ddm', 'apple: print the Declarative Device Management declarations (JSON) instead of the profile')
    .option('--nodes', 'windows: print the CSP nodes (JSON) instead of the SyncML commands')
    .addHelpText(
      'after',
      `
Secret references (\${secret:NAME}) are printed as they are: they are resolved
only when a command is sent to a device.

Examples:
  $ muster render corp-baseline --platform apple policies/ > corp.mobileconfig.xml
  $ muster render corp-baseline --platform apple --ddm policies/
  $ muster render win-baseline --platform windows policies/     # the SyncML commands
  $ muster render win-baseline --platform windows --nodes policies/
  $ muster render android-kiosk --platform android policies/`,
    )
    .action(async (name: string, dir: string, o: { platform: Platform; ddm?: boolean; nodes?: boolean }) => {
      const { result } = await loadTree(io, dir);
      const loaded = result.policySet.bundles.get(name);
      if (!loaded) {
        const errors = result.diagnostics.filter((d) => d.severity === 'error');
        if (errors.length) for (const d of errors) println(io.stderr, formatText(d, paintFor(io.stderr, io.env)));
        throw new CliError(`no valid PolicyBundle named "${name}" in ${dir}${errors.length ? ' (the folder has errors, above)' : ''}`);
      }
      const bundle = { name, version: loaded.resource.spec.version, hash: result.policySet.hashes.get(name)!, spec: loaded.resource.spec };
      if (o.platform === 'apple') {
        const declarations = (['macos', 'ios', 'ipados'] as const).flatMap((f) => compileDeclarations([{ ...bundle, rollout: '' }], f, null).map((i) => ({ family: f, declaration: i.payload })));
        if (o.ddm) {
          if (!declarations.length) {
            println(io.stderr, `${name} has no declarations (only osUpdates.minimumVersion with a deadline becomes one)`);
            setExit(EXIT.failed);
            return;
          }
          return void println(io.stdout, JSON.stringify(declarations, null, 2));
        }
        const xml = renderApple(bundle);
        if (declarations.length) println(io.stderr, `${name} also becomes ${declarations.length} Declarative Device Management declaration${declarations.length > 1 ? 's' : ''}: add --ddm to see them`);
        if (!xml) {
          println(io.stderr, `${name} has nothing for Apple devices`);
          setExit(EXIT.failed);
          return;
        }
        io.stdout.write(xml.endsWith('\n') ? xml : xml + '\n');
        return;
      }
      if (o.platform === 'windows') {
        const w = renderWindows(bundle);
        if (!w) {
          println(io.stderr, `${name} has nothing for Windows devices`);
          setExit(EXIT.failed);
          return;
        }
        for (const uri of w.overridden) println(io.stderr, `note: spec.windows.settings sets ${uri}, replacing what the cross-platform settings give it`);
        if (o.nodes) return void println(io.stdout, JSON.stringify(w.nodes, null, 2));
        println(io.stderr, `${w.nodes.length} CSP node${w.nodes.length === 1 ? '' : 's'}, as the commands a device with none of them receives (secret references unresolved):`);
        io.stdout.write(prettyXml(w.syncml));
        return;
      }
      if (o.platform === 'android') {
        const r = renderAndroid(bundle);
        if (!r) {
          println(io.stderr, `${name} has nothing for Android devices`);
          setExit(EXIT.failed);
          return;
        }
        for (const line of renderAndroidNotes(r)) println(io.stderr, line);
        io.stdout.write(renderAndroidJson(bundle)!);
        return;
      }
      // Platforms whose protocol driver has not landed yet render through the driver in force.
      const driver = createDrivers().get(o.platform)!;
      const native = driver.compile([{ ...bundle, rollout: '' }], { id: 'render', platform: o.platform, osVersion: null, model: null });
      println(io.stdout, JSON.stringify(native, null, 2));
    });
}
