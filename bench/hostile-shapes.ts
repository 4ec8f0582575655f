// Hostile request bodies, one per attack shape on the endpoints `muster serve`
// answers before anyone has authenticated. Shared by test/security (which
// checks each gets the right answer and nothing is stored) and bench/hostile
// (which times them from another process); each body is exactly `size` bytes.

export const MiB = 1024 * 1024;

/** `unit` repeated, then padded with spaces, to exactly `size` bytes (ASCII units only). */
export function repeatTo(unit: string, size: number, prefix = '', suffix = ''): Buffer {
  const room = size - prefix.length - suffix.length;
  const n = Math.max(0, Math.floor(room / unit.length));
  return Buffer.from(prefix + unit.repeat(n) + ' '.repeat(room - n * unit.length) + suffix, 'latin1');
}

const SOAP_OPEN = '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing">';

export const BODIES = {
  /** `<!DOCTYPE` over and over: what made a backtracking regex take seconds. */
  doctype: (size: number) => repeatTo('<!DOCTYPE', size),
  /** An envelope whose body nests one element in another far beyond any real message. */
  nestedXml: (size: number) => repeatTo('<a>', size, `${SOAP_OPEN}<s:Body>`),
  /** One element with as many attributes as fit. */
  manyAttributes: (size: number) => {
    const parts: string[] = [];
    let used = SOAP_OPEN.length + '<s:Body><x '.length + '/></s:Body></s:Envelope>'.length;
    for (let i = 0; ; i++) {
      const a = `a${i}="1" `;
      if (used + a.length > size) break;
      parts.push(a);
      used += a.length;
    }
    return repeatTo(' ', size, `${SOAP_OPEN}<s:Body><x ${parts.join('')}`, '/></s:Body></s:Envelope>');
  },
  /** A well-formed plist with a very long array. */
  hugePlist: (size: number) => repeatTo('<string>x</string>', size, '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><array>', '</array></plist>'),
  /** A plist nesting arrays far deeper than any check-in. */
  nestedPlist: (size: number) => repeatTo('<array>', size, '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0">'),
  /** Bytes that start like DER (SEQUENCE, SEQUENCE, …) and never become a SCEP message. */
  garbageDer: (size: number) => Buffer.alloc(size, 0x30),
  /** JSON nesting arrays as deep as the body allows. */
  deepJson: (size: number) => repeatTo('[', size),
  /** A Pub/Sub-shaped JSON whose data is one enormous string. */
  hugeJson: (size: number) => repeatTo('A', size, '{"message":{"messageId":"1","data":"', '"}}'),
} as const;

export type BodyShape = keyof typeof BODIES;
