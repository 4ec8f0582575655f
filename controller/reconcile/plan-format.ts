// A plan as text for a terminal and as Markdown for a pull-request comment.
import { PLAN_COMMENT_MARKER as PLAN_MARKER } from '../report/github.js';
import type { BundleRef, Counts, Plan } from './plan.js';

const b = (r: BundleRef | null): string => (r ? `${r.name} ${r.version}` : 'nothing');
const counts = (c: Counts): string => `+${c.gain} gain, ~${c.change} change, -${c.lose} lose`;

export function planText(p: Plan): string {
  const out: string[] = [`Plan against ${p.against} (${p.devices} devices)`];
  if (p.unchanged) return [...out, '', 'No changes: applying this tree changes no device.'].join('\n');
  if (p.restarting.length) {
    out.push('', 'Rollouts starting a new revision:');
    for (const r of p.restarting) out.push(`  ${r.rollout} revision ${r.revision}: ${b(r.from)} → ${b(r.to)} (stable: ${b(r.stable)}), begins with ${r.firstStep}`);
  }
  if (p.deletedRollouts.length) {
    out.push('', 'Rollouts removed (their bundles leave the devices unless prune is off):');
    for (const r of p.deletedRollouts) out.push(`  ${r}`);
  }
  out.push('', 'Devices:');
  for (const r of p.rollouts) {
    if (r.gain + r.change + r.lose === 0) continue;
    out.push(`  ${r.rollout} → ${b(r.bundle)} at ${r.weight} % (${r.step}): ${counts(r)}`);
    for (const [g, c] of Object.entries(r.byGroup).sort()) out.push(`    group ${g}: ${counts(c)}`);
    for (const [platform, x] of Object.entries(r.byPlatform).sort()) {
      const what = [...Object.entries(x.install).map(([k, n]) => `install ${k} ×${n}`), ...Object.entries(x.remove).map(([k, n]) => `remove ${k} ×${n}`)];
      out.push(`    ${platform}: ${x.devices} devices${what.length ? ': ' + what.join(', ') : ''}`);
    }
  }
  return out.join('\n');
}


export function planMarkdown(p: Plan, title = 'Muster plan'): string {
  const out: string[] = [PLAN_MARKER, `### ${title}`, '', `Against ${p.against} (${p.devices} devices).`];
  if (p.unchanged) return [...out, '', 'No changes: applying this tree changes no device.'].join('\n');
  if (p.restarting.length || p.deletedRollouts.length) {
    out.push('', '**Called out first**', '');
    for (const r of p.restarting) out.push(`- 🔁 \`${r.rollout}\` starts revision ${r.revision}: ${b(r.from)} → **${b(r.to)}** (stable: ${b(r.stable)}), begins with ${r.firstStep}`);
    for (const r of p.deletedRollouts) out.push(`- 🗑️ \`${r}\` is removed: its bundle leaves its devices unless prune is off`);
  }
  out.push('', '| rollout | bundle | weight | gain | change | lose | platforms |', '|---|---|---:|---:|---:|---:|---|');
  for (const r of p.rollouts) {
    if (r.gain + r.change + r.lose === 0) continue;
    const plats = Object.entries(r.byPlatform)
      .sort()
      .map(([k, x]) => `${k}: ${x.devices}`)
      .join(', ');
    out.push(`| \`${r.rollout}\` | ${b(r.bundle)} | ${r.weight} % | ${r.gain} | ${r.change} | ${r.lose} | ${plats} |`);
  }
  return out.join('\n');
}
