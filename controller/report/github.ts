// Reporting back to GitHub with @octokit/rest: a commit status per applied
// commit (muster/validate, muster/rollout), and one plan comment per pull
// request, found again by a hidden marker and updated in place.
import { Octokit } from '@octokit/rest';

export const PLAN_COMMENT_MARKER = '<!-- muster-plan -->';
/** GitHub refuses a status description longer than this. */
const MAX_DESCRIPTION = 140;

export interface GithubReporterOptions {
  token: string;
  /** https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise. */
  baseUrl?: string;
  owner: string;
  repo: string;
  log: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
}

export type StatusState = 'pending' | 'success' | 'failure' | 'error';

export interface GithubReporter {
  setStatus(sha: string, context: string, state: StatusState, description: string, targetUrl?: string): Promise<void>;
  upsertPlanComment(prNumber: number, markdown: string): Promise<{ id: number; created: boolean }>;
}

export class GithubError extends Error {
  override name = 'GithubError';
}

export function parseRepo(s: string): { owner: string; repo: string } {
  const m = /^([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)$/.exec(s.trim());
  if (!m || m[1] === '.' || m[1] === '..' || m[2] === '.' || m[2] === '..') throw new GithubError(`"${s}" is not OWNER/NAME (e.g. acme/device-policy)`);
  return { owner: m[1]!, repo: m[2]! };
}

/** Cut to GitHub's limit by characters (code points), never splitting a surrogate pair. */
function truncate(text: string, max: number): string {
  const chars = Array.from(text);
  return chars.length <= max ? text : chars.slice(0, max - 1).join('') + '…';
}

/** Muster's comment carries the marker on a line of its own; a quote of it ("> <!-- …") does not count. */
const isPlanComment = (body: string | undefined | null): boolean => !!body && body.split(/\r?\n/).some((l) => l.trim() === PLAN_COMMENT_MARKER);

export function createGithubReporter(o: GithubReporterOptions): GithubReporter {
  // No automatic retries: a failed status is logged and the next one supersedes it.
  const octokit = new Octokit({
    auth: o.token,
    userAgent: 'muster',
    ...(o.baseUrl ? { baseUrl: o.baseUrl.replace(/\/+$/, '') } : {}),
    request: { retries: 0 },
    log: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
  });
  const where = `${o.owner}/${o.repo}`;
  /** One line: what failed, the HTTP status and GitHub's own message (Octokit already keeps the token out). */
  const fail =
    (what: string) =>
    (e: unknown): never => {
      const status = (e as { status?: number }).status;
      const data = (e as { response?: { data?: { message?: string; errors?: Array<{ message?: string; code?: string; field?: string }> } } }).response?.data;
      const detail = data?.errors?.[0];
      const extra = detail ? ` (${detail.message ?? [detail.field, detail.code].filter(Boolean).join(' ')})` : '';
      const message = (data?.message ?? (e as Error).message ?? String(e)) + extra;
      throw new GithubError(`GitHub (${where}): ${what} failed${status ? ` (${status})` : ''}: ${message.split('\n')[0]}`);
    };

  return {
    async setStatus(sha, context, state, description, targetUrl) {
      await octokit.repos
        .createCommitStatus({ owner: o.owner, repo: o.repo, sha, context, state, description: truncate(description, MAX_DESCRIPTION), ...(targetUrl ? { target_url: targetUrl } : {}) })
        .catch(fail(`status ${context} on ${sha.slice(0, 12)}`));
    },

    async upsertPlanComment(pr, markdown) {
      if (!Number.isSafeInteger(pr) || pr <= 0) throw new GithubError(`${pr} is not a pull request number`);
      const body = isPlanComment(markdown) ? markdown : `${PLAN_COMMENT_MARKER}\n${markdown}`;
      // Every page: on a busy pull request the plan comment is long past the first 100.
      const comments = await octokit.paginate(octokit.issues.listComments, { owner: o.owner, repo: o.repo, issue_number: pr, per_page: 100 }).catch(fail(`listing comments of #${pr}`));
      const mine = comments.find((c) => isPlanComment(c.body));
      if (mine) {
        await octokit.issues.updateComment({ owner: o.owner, repo: o.repo, comment_id: mine.id, body }).catch(fail(`updating comment ${mine.id}`));
        o.log.info('updated the plan comment', { repo: where, pr, comment: mine.id });
        return { id: mine.id, created: false };
      }
      const r = await octokit.issues.createComment({ owner: o.owner, repo: o.repo, issue_number: pr, body }).catch(fail(`commenting on #${pr}`));
      o.log.info('posted the plan comment', { repo: where, pr, comment: r.data.id });
      return { id: r.data.id, created: true };
    },
  };
}
