// Which TCP peers are trusted proxies (`muster serve --trusted-proxy CIDR…`):
// only they may tell Muster who a device is (a forwarded client-certificate
// header) or who a client is (X-Forwarded-For, for req.ip). The matching is
// node's BlockList, which takes subnets of both families and matches an
// IPv4-mapped IPv6 peer (::ffff:a.b.c.d, what a dual-stack listener reports
// for an IPv4 client) against IPv4 ranges and the other way round.
import { BlockList, isIP } from 'node:net';

export class TrustedProxyError extends Error {
  override name = 'TrustedProxyError';
}

export interface TrustedProxies {
  /** The ranges as given (for logs). */
  readonly ranges: readonly string[];
  /** Ranges that cover every address of a family (0.0.0.0/0, ::/0): worth a warning. */
  readonly everyone: readonly string[];
  /** Whether a TCP peer address is in one of the ranges; false for anything that is not an address. */
  has(address: string | undefined): boolean;
}

/** `10.0.0.0/8`, `fd00::/8`, `::ffff:10.0.0.0/104`, or one address (`192.0.2.7`, `::1`). */
export function trustedProxies(ranges: readonly string[]): TrustedProxies {
  const list = new BlockList();
  const everyone: string[] = [];
  for (const range of ranges) {
    const m = /^([^/\s]+)(?:\/(\d{1,3}))?$/.exec(range.trim());
    const family = m ? isIP(m[1]!) : 0;
    if (!m || !family) throw new TrustedProxyError(`"${range}" is not an address or CIDR range (such as 10.0.0.0/8 or fd00::/8)`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    const max = family === 4 ? 32 : 128;
    const prefix = m[2] === undefined ? max : Number(m[2]);
    if (prefix > max) throw new TrustedProxyError(`"${range}": an ${type.toUpperCase()} prefix is at most /${max}`);
    list.addSubnet(m[1]!, prefix, type);
    if (prefix === 0) everyone.push(range);
  }
  return {
    ranges: [...ranges],
    everyone,
    has(address) {
      const family = address ? isIP(address) : 0;
      return family !== 0 && list.check(address!, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}
