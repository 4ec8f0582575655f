// Reporting back to GitHub with @octokit/rest: a commit status per applied
// commit (muster/validate, muster/rollout), and one plan comment per pull
// request, found again by a hidden marker and updated in place.
import { Octokit } from '@octokit/rest';

export const PLAN_COMMENT_MARKER = '<!-- muster-plan -->';

export interface GithubReporterOptions {
  token: string;
  /** https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise. */
  baseUrl?: string;
  owner: string;
  repo: string;
  log: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
}

export type StatusState = 'pending' | 'success' | 'failure' | 'error';

export class GithubError extends Error {}

export function parseRepo(s: string): { owner: string; repo: string } {
  const m = /^([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)$/.exec(s.trim());
  if (!m) throw new GithubError(`"${s}" is not OWNER/NAME (e.g. acme/device-policy)`);
  return { owner: m[1]!, repo: m[2]! };
}

export function createGithubReporter(o: GithubReporterOptions) {
  // No automatic retries: a failed status is logged and the next one supersedes it.
  const octokit = new Octokit({ auth: o.token, ...(o.baseUrl ? { baseUrl: o.baseUrl.replace(/\/+$/, '') } : {}), request: { retries: 0 }, log: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} } });
  const fail = (what: string) => (e: unknown): never => {
    const status = (e as { status?: number }).status;
    const message = (e as { response?: { data?: { message?: string } } }).response?.data?.message ?? (e as Error).message;
    throw new GithubError(`GitHub ${what} failed${status ? ` (${status})` : ''}: ${message}`);
  };
  return {
    async setStatus(sha: string, context: string, state: StatusState, description: string, targetUrl?: string): Promise<void> {
      await octokit.repos
        .createCommitStatus({ owner: o.owner, repo: o.repo, sha, context, state, description: description.length > 140 ? description.slice(0, 139) + '…' : description, ...(targetUrl ? { target_url: targetUrl } : {}) })
        .catch(fail(`status ${context} on ${sha.slice(0, 12)}`));
    },
    async upsertPlanComment(pr: number, markdown: string): Promise<{ id: number; created: boolean }> {
      const body = markdown.startsWith(PLAN_COMMENT_MARKER) ? markdown : `${PLAN_COMMENT_MARKER}\n${markdown}`;
      const comments = await octokit
        .paginate(octokit.issues.listComments, { owner: o.owner, repo: o.repo, issue_number: pr, per_page: 100 })
        .catch(fail(`listing comments of #${pr}`));
      const mine = comments.find((c) => c.body?.startsWith(PLAN_COMMENT_MARKER));
      if (mine) {
        await octokit.issues.updateComment({ owner: o.owner, repo: o.repo, comment_id: mine.id, body }).catch(fail(`updating comment ${mine.id}`));
        return { id: mine.id, created: false };
      }
      const r = await octokit.issues.createComment({ owner: o.owner, repo: o.repo, issue_number: pr, body }).catch(fail(`commenting on #${pr}`));
      return { id: r.data.id, created: true };
    },
  };
}
