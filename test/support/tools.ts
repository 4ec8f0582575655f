// Tests that need a Debian tool or a server skip with a one-line reason on a
// newcomer's machine, but under CI=true anything missing is a failure, so CI
// always runs everything.
import { execFileSync } from 'node:child_process';

export const inCI = process.env.CI === 'true';

function onPath(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${JSON.stringify(cmd)}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Returns a skip reason when `cmd` is not installed (undefined when it is).
 * Under CI=true a missing tool throws, failing the suite instead of skipping it.
 */
export function missingTool(cmd: string, debianPackage: string): string | undefined {
  if (onPath(cmd)) return undefined;
  const reason = `${cmd} is not installed (apt-get install ${debianPackage})`;
  if (inCI) throw new Error(`CI=true and ${reason}`);
  console.warn(`skipping: ${reason}`);
  return reason;
}
