// `muster serve --windows-poll`: the schedule new Windows devices get, as a person writes it.
import { describe, expect, it } from 'vitest';
import { parsePollFlag } from '../../controller/cli/commands/serve-windows.js';

describe('--windows-poll', () => {
  it('reads two sets and a steady interval, in minutes', () => {
    expect(parsePollFlag('3m:15,15m:12,8h')).toEqual({ first: { everyMinutes: 3, times: 15 }, second: { everyMinutes: 15, times: 12 }, thenMinutes: 480, onLogin: true });
    expect(parsePollFlag('90s:4,1h')).toEqual({ first: { everyMinutes: 1, times: 4 }, second: { everyMinutes: 0, times: 0 }, thenMinutes: 60, onLogin: true });
    expect(parsePollFlag('1m').thenMinutes).toBe(1);
  });

  it('refuses what the DMClient could not take, saying why', () => {
    expect(() => parsePollFlag('3m:15,15m:12,1m:2,8h')).toThrow(/at most two sets/);
    expect(() => parsePollFlag('3m*15,8h')).toThrow(/EVERY:TIMES/);
    expect(() => parsePollFlag('30s')).toThrow(/at least one minute/);
    expect(() => parsePollFlag('soon')).toThrow();
  });
});
