// Go-style durations as the schemas accept them: 90s, 15m, 1h30m, 7d, 250ms.
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string): number {
  const re = /([0-9]+)(ms|s|m|h|d)/g;
  let total = 0;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    consumed += m[0].length;
  }
  if (consumed !== text.length || consumed === 0) throw new Error(`not a duration: "${text}" (use e.g. 90s, 15m, 1h30m, 7d)`);
  return total;
}
