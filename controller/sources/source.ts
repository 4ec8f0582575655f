// What the controller needs from wherever policy comes from: a Git branch or a
// plain folder. A "commit" is the source's name for one exact content.
import type { ReadResult } from './dir.js';

export interface PolicySource {
  /** For logs: the URL (credentials redacted) and branch, or the folder. */
  readonly description: string;
  /** Looks for new content now; `changed` when it differs from the last sync. */
  sync(): Promise<{ commit: string; changed: boolean }>;
  /** The policy files of one commit. */
  read(commit: string): Promise<ReadResult>;
  /** Polls, calling onChange for the current content once and for every change after. */
  start(onChange: (commit: string) => void | Promise<void>): void;
  /** Sync now (a webhook arrived). */
  trigger(): Promise<void>;
  stop(): Promise<void>;
}
