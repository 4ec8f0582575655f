// `--trusted-proxy`: which TCP peers are proxies, by address or CIDR range,
// both families, and IPv4 peers as a dual-stack listener reports them
// (::ffff:a.b.c.d).
import { describe, expect, it } from 'vitest';
import { TrustedProxyError, trustedProxies } from '../../controller/server/trusted-proxy.js';

describe('trusted proxies', () => {
  it('matches IPv4 ranges and single addresses', () => {
    const p = trustedProxies(['10.0.0.0/8', '192.0.2.7']);
    expect(p.has('10.200.3.4')).toBe(true);
    expect(p.has('11.0.0.1')).toBe(false);
    expect(p.has('192.0.2.7')).toBe(true);
    expect(p.has('192.0.2.8')).toBe(false);
  });

  it('matches IPv6 ranges', () => {
    const p = trustedProxies(['fd00::/8', '::1']);
    expect(p.has('fd12:3456::1')).toBe(true);
    expect(p.has('fe80::1')).toBe(false);
    expect(p.has('::1')).toBe(true);
    expect(p.has('::2')).toBe(false);
  });

  it('matches an IPv4-mapped IPv6 peer against IPv4 ranges, and an IPv4 peer against mapped ranges', () => {
    expect(trustedProxies(['10.0.0.0/8']).has('::ffff:10.1.2.3')).toBe(true);
    expect(trustedProxies(['10.0.0.0/8']).has('::ffff:11.1.2.3')).toBe(false);
    expect(trustedProxies(['::ffff:10.0.0.0/104']).has('10.1.2.3')).toBe(true);
    expect(trustedProxies(['::ffff:10.0.0.0/104']).has('11.1.2.3')).toBe(false);
  });

  it('trusts nothing that is not an address, and nothing when the list is empty', () => {
    const p = trustedProxies(['10.0.0.0/8']);
    expect(p.has(undefined)).toBe(false);
    expect(p.has('')).toBe(false);
    expect(p.has('10.0.0.1, 11.0.0.1')).toBe(false);
    expect(p.has('proxy.internal')).toBe(false);
    expect(trustedProxies([]).has('127.0.0.1')).toBe(false);
  });

  it('refuses what is not an address or range, saying which', () => {
    expect(() => trustedProxies(['10.0.0.0/33'])).toThrow(/"10\.0\.0\.0\/33": an IPV4 prefix is at most \/32/);
    expect(() => trustedProxies(['fd00::/129'])).toThrow(/at most \/128/);
    expect(() => trustedProxies(['proxy.internal'])).toThrow(TrustedProxyError);
    expect(() => trustedProxies(['10.0.0.0/'])).toThrow(/not an address or CIDR range/);
    expect(() => trustedProxies(['10.0.0/8'])).toThrow(/not an address or CIDR range/);
  });

  it('names the ranges that trust everyone', () => {
    expect(trustedProxies(['0.0.0.0/0', '10.0.0.0/8', '::/0']).everyone).toEqual(['0.0.0.0/0', '::/0']);
    expect(trustedProxies(['10.0.0.0/8']).everyone).toEqual([]);
  });
});
