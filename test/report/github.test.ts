// The GitHub reporter with the real Octokit client against a local server
// speaking the few REST endpoints it uses, recording every request it gets.
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GithubError, PLAN_COMMENT_MARKER, createGithubReporter, parseRepo } from '../../controller/report/github.js';
import { muster } from '../support/cli.js';

interface Comment {
  id: number;
  body: string;
}
interface Seen {
  method: string;
  url: string;
  auth: string | undefined;
  body: unknown;
}

const TOKEN = 'ghs_reportertoken0123456789';

describe('GitHub reporter', () => {
  let app: FastifyInstance;
  let base: string;
  const seen: Seen[] = [];
  const comments: Comment[] = [];
  let nextId = 5000;
  /** The next request (of that method, if given) answered with this status and GitHub-style error body instead. */
  let failNext: { method?: string; status: number; body: object } | undefined;

  beforeAll(async () => {
    app = Fastify();
    app.addHook('preHandler', async (req, reply) => {
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, body: req.body });
      if (failNext && (!failNext.method || failNext.method === req.method)) {
        const f = failNext;
        failNext = undefined;
        return reply.code(f.status).send(f.body);
      }
    });
    app.post<{ Params: { sha: string } }>('/repos/acme/policy/statuses/:sha', async (_req, reply) => reply.code(201).send({ id: 1, state: 'success' }));
    app.get<{ Querystring: { page?: string; per_page?: string } }>('/repos/acme/policy/issues/7/comments', async (req, reply) => {
      const page = Number(req.query.page ?? 1);
      const per = Number(req.query.per_page ?? 30);
      if (page * per < comments.length) reply.header('link', `<${base}/repos/acme/policy/issues/7/comments?page=${page + 1}&per_page=${per}>; rel="next"`);
      return comments.slice((page - 1) * per, page * per);
    });
    app.post<{ Body: { body: string } }>('/repos/acme/policy/issues/7/comments', async (req, reply) => {
      const c = { id: nextId++, body: req.body.body };
      comments.push(c);
      return reply.code(201).send(c);
    });
    app.patch<{ Params: { id: string }; Body: { body: string } }>('/repos/acme/policy/issues/comments/:id', async (req, reply) => {
      const c = comments.find((x) => x.id === Number(req.params.id));
      if (!c) return reply.code(404).send({ message: 'Not Found' });
      c.body = req.body.body;
      return c;
    });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    // 150 comments before Muster's: its own lands on page 2 of 100, so finding it again needs the Link header.
    // One of them quotes the marker, which must not count as Muster's comment.
    for (let i = 1; i <= 150; i++) comments.push({ id: i, body: i === 42 ? `> ${PLAN_COMMENT_MARKER}\n> old plan, quoted` : `chatter ${i}` });
  });
  afterAll(async () => app?.close());
  beforeEach(() => {
    seen.length = 0;
  });

  const logged: string[] = [];
  // A trailing slash on baseUrl is tolerated.
  const reporter = () => createGithubReporter({ token: TOKEN, baseUrl: `${base}/`, owner: 'acme', repo: 'policy', log: { info: (m) => void logged.push(m), warn: (m) => void logged.push(m) } });

  it('sets a commit status with the token, the description cut to 140 characters', async () => {
    await reporter().setStatus('abc123', 'muster/validate', 'failure', '🚫'.repeat(300), 'https://muster.example/status');
    expect(seen).toHaveLength(1);
    const s = seen[0]!;
    expect(s.method).toBe('POST');
    expect(s.url).toBe('/repos/acme/policy/statuses/abc123');
    expect(s.auth).toBe(`token ${TOKEN}`);
    const body = s.body as Record<string, string>;
    expect(body).toEqual({ context: 'muster/validate', state: 'failure', description: '🚫'.repeat(139) + '…', target_url: 'https://muster.example/status' });

    await reporter().setStatus('abc123', 'muster/rollout', 'success', 'all healthy');
    expect(seen[1]!.body).toEqual({ context: 'muster/rollout', state: 'success', description: 'all healthy' });
  });

  it('creates one plan comment, then finds it on page 2 and updates that same comment', async () => {
    const a = await reporter().upsertPlanComment(7, '## Plan\nfirst plan');
    expect(a.created).toBe(true);
    expect(seen.map((s) => `${s.method} ${s.url.split('?')[0]}`)).toEqual(['GET /repos/acme/policy/issues/7/comments', 'GET /repos/acme/policy/issues/7/comments', 'POST /repos/acme/policy/issues/7/comments']);
    expect(seen[1]!.url).toContain('page=2');
    expect(seen[2]!.body).toEqual({ body: `${PLAN_COMMENT_MARKER}\n## Plan\nfirst plan` });
    expect(seen.every((s) => s.auth === `token ${TOKEN}`)).toBe(true);

    seen.length = 0;
    const b = await reporter().upsertPlanComment(7, `${PLAN_COMMENT_MARKER}\nsecond plan`);
    expect(b).toEqual({ id: a.id, created: false });
    expect(seen.map((s) => s.method)).toEqual(['GET', 'GET', 'PATCH']);
    expect(seen[2]!.url).toBe(`/repos/acme/policy/issues/comments/${a.id}`);
    // Already marked: not marked twice.
    expect(seen[2]!.body).toEqual({ body: `${PLAN_COMMENT_MARKER}\nsecond plan` });

    const mine = comments.filter((c) => c.body.startsWith(PLAN_COMMENT_MARKER));
    expect(mine).toEqual([{ id: a.id, body: `${PLAN_COMMENT_MARKER}\nsecond plan` }]);
    expect(comments.find((c) => c.id === 42)!.body).toMatch(/^> /);
    expect(logged).toEqual(['posted the plan comment', 'updated the plan comment']);
  });

  it('surfaces GitHub errors as one clear line without the token', async () => {
    failNext = { status: 422, body: { message: 'Validation Failed', errors: [{ resource: 'Status', code: 'custom', message: 'No commit found for SHA: abc' }] } };
    const e1 = await reporter()
      .setStatus('abc', 'muster/rollout', 'pending', 'x')
      .then(() => undefined, (e: Error) => e);
    expect(e1).toBeInstanceOf(GithubError);
    expect(e1!.message).toBe('GitHub (acme/policy): status muster/rollout on abc failed (422): Validation Failed (No commit found for SHA: abc)');

    failNext = { status: 500, body: { message: 'boom' } };
    const e2 = await reporter()
      .upsertPlanComment(7, 'x')
      .then(() => undefined, (e: Error) => e);
    expect(e2).toBeInstanceOf(GithubError);
    expect(e2!.message).toMatch(/listing comments of #7 failed \(500\): boom$/);

    // The update fails after the comment was found: that error, and no second comment created instead.
    const before = comments.length;
    failNext = { method: 'PATCH', status: 500, body: { message: 'Server Error' } };
    const e3 = await reporter()
      .upsertPlanComment(7, 'third plan')
      .then(() => undefined, (e: Error) => e);
    expect(e3).toBeInstanceOf(GithubError);
    expect(e3!.message).toMatch(/updating comment \d+ failed \(500\): Server Error$/);
    expect(comments.length).toBe(before);
    expect(seen.filter((s) => s.method === 'POST' && s.url.includes('/comments'))).toHaveLength(0);

    for (const e of [e1!, e2!, e3!]) {
      expect(e.message).not.toContain(TOKEN);
      expect(e.message).not.toContain('\n');
    }
  });

  it('refuses a bad repository name or pull request number clearly', async () => {
    expect(parseRepo('acme/device-policy')).toEqual({ owner: 'acme', repo: 'device-policy' });
    expect(parseRepo(' acme/policy.v2 ')).toEqual({ owner: 'acme', repo: 'policy.v2' });
    for (const bad of ['nope', 'a/b/c', '/x', 'x/', 'acme/..', 'a b/c']) expect(() => parseRepo(bad), bad).toThrow(/is not OWNER\/NAME/);
    await expect(reporter().upsertPlanComment(0, 'x')).rejects.toThrow(/not a pull request number/);
    expect(seen).toHaveLength(0);
  });

  it('muster plan --comment posts the Markdown plan to the pull request', async () => {
    const before = comments.find((c) => c.body.startsWith(PLAN_COMMENT_MARKER))!;
    const r = await muster(['plan', 'policies-example', '--format', 'markdown', '--comment', '--repo', 'acme/policy', '--pr', '7', '--github-url', base], { env: { GITHUB_TOKEN: TOKEN } });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/updated the plan comment on acme\/policy#7/);
    const after = comments.find((c) => c.body.startsWith(PLAN_COMMENT_MARKER))!;
    expect(after.id).toBe(before.id);
    expect(after.body).toMatch(/corp-baseline/);
    expect(r.stdout.trim()).toBe(after.body.trim());
  });
});
