import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseGithubPush, verifyGithubSignature } from '../../controller/sources/webhook.js';

const body = Buffer.from(JSON.stringify({ ref: 'refs/heads/main', after: 'abc123' }));
const sign = (secret: string, b: Buffer) => 'sha256=' + createHmac('sha256', secret).update(b).digest('hex');

describe('GitHub webhook signature', () => {
  it('accepts the right signature, in either hex case', () => {
    expect(verifyGithubSignature('s3cret', body, sign('s3cret', body))).toBe(true);
    expect(verifyGithubSignature('s3cret', body, sign('s3cret', body).toUpperCase().replace('SHA256=', 'sha256='))).toBe(true);
  });
  it.each([
    ['a wrong secret', sign('other', body)],
    ['a tampered body', sign('s3cret', Buffer.concat([body, Buffer.from(' ')]))],
    ['no header', undefined],
    ['the sha1 header format', 'sha1=' + createHmac('sha1', 's3cret').update(body).digest('hex')],
    ['a truncated digest', sign('s3cret', body).slice(0, -2)],
    ['odd-length hex', sign('s3cret', body).slice(0, -1)],
    ['a digest with extra bytes', sign('s3cret', body) + '00'],
    ['an empty digest', 'sha256='],
    ['garbage', 'sha256=zz'],
  ])('refuses %s', (_what, header) => expect(verifyGithubSignature('s3cret', body, header)).toBe(false));
  it('refuses everything when no secret is configured', () => expect(verifyGithubSignature('', body, sign('', body))).toBe(false));
  it('reads the branch and head of a push, tolerating anything else', () => {
    expect(parseGithubPush(body)).toEqual({ ref: 'refs/heads/main', after: 'abc123' });
    expect(parseGithubPush('{"zen":"hi"}')).toBeUndefined();
    expect(parseGithubPush('not json')).toBeUndefined();
    expect(parseGithubPush('null')).toBeUndefined();
    expect(parseGithubPush({ ref: 'refs/heads/dev', after: 'def456', commits: [] })).toEqual({ ref: 'refs/heads/dev', after: 'def456' });
    expect(parseGithubPush({ ref: 1, after: 'x' })).toBeUndefined();
  });
});
