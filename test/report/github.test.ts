// The GitHub reporter with the real Octokit client against a local server
// speaking the few REST endpoints it uses.
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { muster } from '../support/cli.js';
import { GithubError, PLAN_COMMENT_MARKER, createGithubReporter, parseRepo } from '../../controller/report/github.js';

interface Comment {
  id: number;
  body: string;
}

describe('GitHub reporter', () => {
  let app: FastifyInstance;
  let base: string;
  const statuses: Array<Record<string, unknown>> = [];
  const comments: Comment[] = [];
  const auth: string[] = [];
  let failNext = 0;

  beforeAll(async () => {
    app = Fastify();
    app.addHook('onRequest', async (req, reply) => {
      auth.push(String(req.headers.authorization));
      if (failNext) {
        const code = failNext;
        failNext = 0;
        return reply.code(code).send({ message: code === 422 ? 'Validation Failed' : 'boom' });
      }
    });
    app.post<{ Params: { sha: string }; Body: Record<string, unknown> }>('/repos/acme/policy/statuses/:sha', async (req) => {
      statuses.push({ sha: req.params.sha, ...req.body });
      return { id: statuses.length };
    });
    // Two pages of 100 unrelated comments first, so the marker is only found by paginating.
    for (let i = 1; i <= 150; i++) comments.push({ id: i, body: `chatter ${i}` });
    app.get<{ Querystring: { page?: string; per_page?: string } }>('/repos/acme/policy/issues/7/comments', async (req, reply) => {
      const page = Number(req.query.page ?? 1);
      const per = Number(req.query.per_page ?? 30);
      const slice = comments.slice((page - 1) * per, page * per);
      if (page * per < comments.length) reply.header('link', `<${base}/repos/acme/policy/issues/7/comments?page=${page + 1}&per_page=${per}>; rel="next"`);
      return slice;
    });
    app.post<{ Body: { body: string } }>('/repos/acme/policy/issues/7/comments', async (req, reply) => {
      const c = { id: 1000 + comments.length, body: req.body.body };
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
  });
  afterAll(async () => app?.close());

  const reporter = () => createGithubReporter({ token: 'tok', baseUrl: base, owner: 'acme', repo: 'policy', log: { info: () => {}, warn: () => {} } });

  it('sets a commit status, description cut to 140 characters', async () => {
    await reporter().setStatus('abc123', 'muster/validate', 'failure', 'x'.repeat(300));
    expect(statuses[0]).toMatchObject({ sha: 'abc123', context: 'muster/validate', state: 'failure' });
    expect(String(statuses[0]!.description).length).toBe(140);
    expect(auth.at(-1)).toBe('token tok');
  });

  it('creates one plan comment, then updates that same comment', async () => {
    const a = await reporter().upsertPlanComment(7, `${PLAN_COMMENT_MARKER}\nfirst plan`);
    expect(a.created).toBe(true);
    const b = await reporter().upsertPlanComment(7, 'second plan');
    expect(b).toEqual({ id: a.id, created: false });
    const mine = comments.filter((c) => c.body.startsWith(PLAN_COMMENT_MARKER));
    expect(mine).toHaveLength(1);
    expect(mine[0]!.body).toContain('second plan');
  });

  it('surfaces GitHub errors clearly', async () => {
    failNext = 422;
    await expect(reporter().setStatus('abc', 'muster/rollout', 'pending', 'x')).rejects.toThrow(/status muster\/rollout on abc failed \(422\): Validation Failed/);
    failNext = 500;
    await expect(reporter().upsertPlanComment(7, 'x')).rejects.toThrow(GithubError);
    expect(() => parseRepo('nope')).toThrow(/OWNER\/NAME/);
  });

  it('muster plan --comment posts the Markdown plan to the pull request', async () => {
    const before = comments.find((c) => c.body.startsWith(PLAN_COMMENT_MARKER))!.body;
    const r = await muster(['plan', 'policies-example', '--format', 'markdown', '--comment', '--repo', 'acme/policy', '--pr', '7', '--github-url', base], { env: { GITHUB_TOKEN: 'tok' } });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/updated the plan comment on acme\/policy#7/);
    const after = comments.find((c) => c.body.startsWith(PLAN_COMMENT_MARKER))!.body;
    expect(after).not.toBe(before);
    expect(after).toMatch(/corp-baseline/);
    expect(r.stdout.trim()).toBe(after.trim());
  });
});
