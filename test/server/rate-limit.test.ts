// `muster serve --enroll-rate`: the per-client limit on enrollment requests, as a person writes it.
import { describe, expect, it } from 'vitest';
import { DEFAULT_ENROLL_RATE_PER_MINUTE, parseRatePerMinute } from '../../controller/server/rate-limit.js';
import { muster } from '../support/cli.js';

describe('--enroll-rate', () => {
  it('reads requests per minute, per second or per hour, and off', () => {
    expect(parseRatePerMinute('600/min')).toBe(600);
    expect(parseRatePerMinute('600')).toBe(600);
    expect(parseRatePerMinute('10/s')).toBe(600);
    expect(parseRatePerMinute('120 / h')).toBe(2);
    expect(parseRatePerMinute('off')).toBe(0);
    expect(parseRatePerMinute('0')).toBe(0);
    expect(DEFAULT_ENROLL_RATE_PER_MINUTE).toBe(600);
  });

  it('refuses what is not a rate, saying how to write one', async () => {
    expect(() => parseRatePerMinute('soon')).toThrow(/N\/min/);
    expect(() => parseRatePerMinute('-5/min')).toThrow(/not a rate/);
    expect(() => parseRatePerMinute('10/day')).toThrow(/not a rate/);
    expect(() => parseRatePerMinute('30/h')).toThrow(/less than one request a minute/);
    const run = await muster(['serve', '--enroll-rate', 'lots']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--enroll-rate: "lots" is not a rate/);
  });
});
