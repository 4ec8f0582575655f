// A plain folder as a policy source, for local use and `npm start`. Its
// "commit" is a digest of every file's path and text, so an unchanged folder
// is the same commit and any edit is a new one.
import { createHash } from 'node:crypto';
import { readPolicyDir, type ReadResult } from './dir.js';
import type { PolicySource } from './source.js';

export function createDirSource(root: string, opts: { intervalMs?: number; onError?: (e: Error) => void } = {}): PolicySource {
  let last: { commit: string; read: ReadResult } | undefined;
  let timer: NodeJS.Timeout | undefined;
  let queued: Promise<void> | undefined;
  let listener: ((commit: string) => void | Promise<void>) | undefined;
  let running: Promise<{ commit: string; changed: boolean }> | undefined;
  /** The commit onChange last accepted. */
  let notified: string | undefined;

  const sync = async () => {
    const read = await readPolicyDir(root);
    const h = createHash('sha256');
    for (const f of read.files) h.update(f.path).update('\0').update(f.text).update('\0');
    const commit = `dir-${h.digest('hex').slice(0, 16)}`;
    const changed = commit !== last?.commit;
    last = { commit, read };
    return { commit, changed };
  };
  // Compared with what onChange last accepted, not with `changed`: a sync() from elsewhere (the controller's
  // own read) must not swallow a change, and a failed onChange is tried again at the next poll.
  const poll = async () => {
    running ??= sync().finally(() => (running = undefined));
    const r = await running;
    const onChange = listener;
    if (onChange && r.commit !== notified) {
      await onChange(r.commit);
      if (listener === onChange) notified = r.commit;
    }
  };

  return {
    description: `folder ${root}`,
    // A read already under way may have listed the folder before the caller's change: wait it out and read
    // afresh (sharing only a read that starts after this call), so sync() never answers with older content.
    async sync() {
      await running?.catch(() => {});
      return (running ??= sync().finally(() => (running = undefined)));
    },
    async read(commit) {
      if (last?.commit !== commit) await sync();
      if (last?.commit !== commit) throw new Error(`${root} no longer holds ${commit}; it changed since`);
      return last.read;
    },
    start(onChange) {
      listener = onChange;
      last = undefined;
      notified = undefined;
      const loop = () => {
        poll()
          .catch((e: Error) => opts.onError?.(e))
          .finally(() => {
            if (listener) timer = setTimeout(loop, opts.intervalMs ?? 5_000);
          });
      };
      loop();
    },
    // A webhook means "there is something newer than any fetch already under way": wait for that one,
    // then fetch again. Triggers arriving while one waits share it.
    trigger: () =>
      (queued ??= (async () => {
        await running?.catch(() => {});
        queued = undefined;
        await poll();
      })()),
    async stop() {
      listener = undefined;
      if (timer) clearTimeout(timer);
      await running?.catch(() => {});
    },
  };
}
