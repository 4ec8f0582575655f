// The one place Muster reads and writes property lists.
//
// Writing is XML through the `plist` package, after a check that the value has
// a plist form at all (no null, NaN, cycles or unsafe integers: the package
// would drop or garble them silently).
//
// Reading is done here, for both forms devices send, with bounds checked
// before any work: a total size, a nesting depth and a count of values.
//  - XML: a small strict reader for the plist vocabulary. The
//    `<!DOCTYPE plist PUBLIC …>` line real plists carry is accepted; an
//    internal subset (`<!DOCTYPE plist [ … ]>`) or any `<!ENTITY` is refused,
//    and no entity other than XML's five and character references is ever
//    expanded. A general XML parser would accept more than a plist and expand
//    what it is given; this one does neither.
//  - Binary (bplist00): offsets, lengths and references are all checked
//    against the object area, references are checked for cycles, and shared
//    objects count every time they are expanded (a small file whose arrays
//    all point at one another cannot expand into billions of values).
import { build } from 'plist';

/** What a plist holds once read: `data` is a Buffer, `date` a Date, `integer` and `real` are numbers. */
export type PlistValue = string | number | boolean | Date | Buffer | PlistValue[] | PlistDict;
export interface PlistDict {
  [key: string]: PlistValue;
}

/** A plist that cannot be read or a value that cannot be written; the message says where. */
export class PlistError extends Error {
  override name = 'PlistError';
}

export interface PlistLimits {
  /** Largest input accepted, in bytes. Default 8 MiB (an InstalledApplicationList of a full Mac fits). */
  maxBytes?: number;
  /** Deepest nesting of arrays and dictionaries. Default 64. */
  maxDepth?: number;
  /** Most values produced (every string, number, array … counts once each time it appears). Default 500,000. */
  maxObjects?: number;
}

export const DEFAULT_PLIST_LIMITS: Required<PlistLimits> = { maxBytes: 8 * 1024 * 1024, maxDepth: 64, maxObjects: 500_000 };

export const isPlistDict = (v: unknown): v is PlistDict =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date);

/** Sets a key without ever touching a prototype (a `__proto__` key becomes an ordinary own property). */
function setKey(obj: PlistDict, key: string, value: PlistValue): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

// ------------------------------------------------------------------ writing

// Characters XML 1.0 cannot carry, even escaped, and lone surrogates (matching control characters is the point).
// eslint-disable-next-line no-control-regex
const XML_ILLEGAL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkWritable(v: unknown, path: string, depth: number, ancestors: Set<object>): void {
  if (depth > DEFAULT_PLIST_LIMITS.maxDepth) throw new PlistError(`${path}: nested more than ${DEFAULT_PLIST_LIMITS.maxDepth} levels deep`);
  switch (typeof v) {
    case 'string':
      if (XML_ILLEGAL.test(v)) throw new PlistError(`${path}: a string with a character XML cannot carry (control character or lone surrogate)`);
      return;
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(v)) throw new PlistError(`${path}: ${v} has no plist form`);
      if (Number.isInteger(v) && !Number.isSafeInteger(v)) throw new PlistError(`${path}: integer ${v} is beyond 2^53 and would lose precision`);
      return;
    case 'object':
      break;
    default:
      throw new PlistError(`${path}: a ${typeof v} has no plist form`);
  }
  if (v === null) throw new PlistError(`${path}: null has no plist form (leave the key out instead)`);
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) throw new PlistError(`${path}: invalid date`);
    return;
  }
  if (v instanceof Uint8Array) return;
  if (ancestors.has(v)) throw new PlistError(`${path}: the value contains itself`);
  ancestors.add(v);
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      if (x === undefined) throw new PlistError(`${path}[${i}]: undefined in an array has no plist form`);
      checkWritable(x, `${path}[${i}]`, depth + 1, ancestors);
    });
  } else {
    const proto = Object.getPrototypeOf(v) as unknown;
    if (proto !== Object.prototype && proto !== null) throw new PlistError(`${path}: only plain objects can be written as a dictionary`);
    for (const [k, x] of Object.entries(v)) {
      if (XML_ILLEGAL.test(k)) throw new PlistError(`${path}: a key with a character XML cannot carry`);
      if (x !== undefined) checkWritable(x, `${path}.${k}`, depth + 1, ancestors);
    }
  }
  ancestors.delete(v);
}

/**
 * The XML plist of `value` as UTF-8 bytes, with the usual XML declaration and
 * DOCTYPE. Dictionary keys whose value is undefined are left out; anything
 * without a plist form (null, NaN, a function, a cycle …) is a PlistError.
 */
export function encodePlist(value: unknown): Buffer {
  checkWritable(value, '$', 0, new Set());
  try {
    return Buffer.from(build(value as Parameters<typeof build>[0], { pretty: true, indent: '  ' }), 'utf8');
  } catch (e) {
    throw new PlistError(`cannot write the plist: ${(e as Error).message}`, { cause: e });
  }
}

// ------------------------------------------------------------------ reading

/**
 * Reads an XML or binary (bplist00) property list. Bytes beginning with
 * `bplist` are binary; anything else must be UTF-8 XML. Throws PlistError for
 * anything malformed, over a limit, or using XML features a plist has no need
 * of (entity declarations, internal DTD subsets).
 */
export function decodePlist(input: Buffer | Uint8Array | string, limits: PlistLimits = {}): PlistValue {
  const l = { ...DEFAULT_PLIST_LIMITS, ...limits };
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.length;
  if (size === 0) throw new PlistError('empty input is not a plist');
  if (size > l.maxBytes) throw new PlistError(`plist of ${size} bytes is over the limit of ${l.maxBytes}`);
  if (typeof input === 'string') return new XmlReader(input, l).document();
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (buf.subarray(0, 6).toString('latin1') === 'bplist') return new BinaryReader(buf, l).document();
  if ((buf[0] === 0xfe && buf[1] === 0xff) || (buf[0] === 0xff && buf[1] === 0xfe)) throw new PlistError('UTF-16 XML plists are not supported; send UTF-8');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new PlistError('not a binary plist, and not valid UTF-8 for an XML plist');
  }
  return new XmlReader(text, l).document();
}

// ---------------------------------------------------------------- XML reader

const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const SAFE_DOCTYPE = /^<!DOCTYPE\s+plist(?:\s+PUBLIC\s+(?:"[^"<>[\]]*"|'[^'<>[\]]*')\s+(?:"[^"<>[\]]*"|'[^'<>[\]]*')|\s+SYSTEM\s+(?:"[^"<>[\]]*"|'[^'<>[\]]*'))?\s*>$/;
const NAME = /[A-Za-z_:][A-Za-z0-9_.:-]*/y;
const ATTRIBUTE = /\s+[A-Za-z_:][A-Za-z0-9_.:-]*\s*=\s*(?:"[^"<]*"|'[^'<]*')/y;
const INTEGER = /^[+-]?\d+$/;
const REAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const DATE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;

class XmlReader {
  #s: string;
  #i = 0;
  #count = 0;
  readonly #l: Required<PlistLimits>;

  constructor(text: string, limits: Required<PlistLimits>) {
    this.#s = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
    this.#l = limits;
    // Refused before anything is parsed: a plist never declares entities.
    const entity = this.#s.search(/<!ENTITY/i);
    if (entity >= 0) throw new PlistError(`entity declarations are refused (at offset ${entity})`);
  }

  #fail(what: string, at = this.#i): never {
    throw new PlistError(`XML plist: ${what} at offset ${at}`);
  }

  document(): PlistValue {
    this.#misc(true);
    const root = this.#open();
    if (root.name !== 'plist') this.#fail(`the root element must be <plist>, not <${root.name}>`, root.at);
    if (root.empty) this.#fail('an empty <plist/> holds no value', root.at);
    this.#skip();
    const value = this.#value(0);
    this.#skip();
    this.#close('plist');
    this.#misc(false);
    if (this.#i < this.#s.length) this.#fail('content after </plist>');
    return value;
  }

  /** Whitespace, comments and processing instructions; the prolog also allows one safe DOCTYPE. */
  #misc(prolog: boolean): void {
    let doctype = false;
    for (;;) {
      this.#ws();
      if (this.#s.startsWith('<?', this.#i)) {
        const end = this.#s.indexOf('?>', this.#i + 2);
        if (end < 0) this.#fail('unterminated processing instruction');
        this.#i = end + 2;
      } else if (this.#s.startsWith('<!--', this.#i)) {
        this.#comment();
      } else if (this.#s.startsWith('<!DOCTYPE', this.#i)) {
        if (!prolog || doctype) this.#fail('unexpected DOCTYPE');
        const end = this.#s.indexOf('>', this.#i);
        if (end < 0) this.#fail('unterminated DOCTYPE');
        const decl = this.#s.slice(this.#i, end + 1);
        if (decl.includes('[')) this.#fail('a DOCTYPE with an internal subset is refused');
        if (!SAFE_DOCTYPE.test(decl)) this.#fail('only <!DOCTYPE plist PUBLIC "…" "…"> is accepted');
        doctype = true;
        this.#i = end + 1;
      } else if (this.#s.startsWith('<!', this.#i)) {
        this.#fail('unexpected markup declaration');
      } else {
        return;
      }
    }
  }

  #ws(): void {
    while (this.#i < this.#s.length && ' \t\r\n'.includes(this.#s[this.#i]!)) this.#i++;
  }

  #comment(): void {
    const end = this.#s.indexOf('-->', this.#i + 4);
    if (end < 0) this.#fail('unterminated comment');
    this.#i = end + 3;
  }

  /** Whitespace and comments between elements. */
  #skip(): void {
    for (;;) {
      this.#ws();
      if (this.#s.startsWith('<!--', this.#i)) this.#comment();
      else return;
    }
  }

  /** A start tag (attributes checked for syntax, then ignored). */
  #open(): { name: string; empty: boolean; at: number } {
    const at = this.#i;
    if (this.#s[this.#i] !== '<') this.#fail(this.#i >= this.#s.length ? 'unexpected end of input' : 'expected an element');
    NAME.lastIndex = this.#i + 1;
    const m = NAME.exec(this.#s);
    if (!m) this.#fail('expected an element name');
    this.#i = NAME.lastIndex;
    for (;;) {
      ATTRIBUTE.lastIndex = this.#i;
      if (!ATTRIBUTE.exec(this.#s)) break;
      this.#i = ATTRIBUTE.lastIndex;
    }
    this.#ws();
    if (this.#s.startsWith('/>', this.#i)) {
      this.#i += 2;
      return { name: m[0], empty: true, at };
    }
    if (this.#s[this.#i] !== '>') this.#fail(`malformed start tag <${m[0]}>`);
    this.#i++;
    return { name: m[0], empty: false, at };
  }

  #close(name: string): void {
    const at = this.#i;
    if (!this.#s.startsWith('</', this.#i)) this.#fail(`expected </${name}>`);
    NAME.lastIndex = this.#i + 2;
    const m = NAME.exec(this.#s);
    if (!m || m[0] !== name) this.#fail(`expected </${name}>`, at);
    this.#i = NAME.lastIndex;
    this.#ws();
    if (this.#s[this.#i] !== '>') this.#fail(`malformed end tag </${name}>`);
    this.#i++;
  }

  /** Character data up to `</name>`: references decoded, CDATA kept, comments dropped, any other markup refused. */
  #text(name: string): string {
    let out = '';
    for (;;) {
      const lt = this.#s.indexOf('<', this.#i);
      if (lt < 0) this.#fail(`unterminated <${name}>`);
      out += this.#references(this.#s.slice(this.#i, lt), this.#i);
      this.#i = lt;
      if (this.#s.startsWith('<![CDATA[', lt)) {
        const end = this.#s.indexOf(']]>', lt + 9);
        if (end < 0) this.#fail('unterminated CDATA section');
        out += this.#s.slice(lt + 9, end);
        this.#i = end + 3;
      } else if (this.#s.startsWith('<!--', lt)) {
        this.#comment();
      } else if (this.#s.startsWith('</', lt)) {
        this.#close(name);
        return out;
      } else {
        this.#fail(`unexpected element inside <${name}>`);
      }
    }
  }

  #references(raw: string, at: number): string {
    if (!raw.includes('&')) return raw;
    return raw.replace(/&([^;&\s]{0,32});?/g, (whole: string, ref: string, offset: number) => {
      if (!whole.endsWith(';')) this.#fail('a bare & (write &amp;)', at + offset);
      if (ref in PREDEFINED) return PREDEFINED[ref]!;
      const num = /^#(?:x([0-9A-Fa-f]{1,6})|([0-9]{1,7}))$/.exec(ref);
      if (num) {
        const cp = num[1] !== undefined ? parseInt(num[1], 16) : parseInt(num[2]!, 10);
        const legal = cp === 0x9 || cp === 0xa || cp === 0xd || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
        if (!legal) this.#fail(`character reference &${ref}; is not a legal XML character`, at + offset);
        return String.fromCodePoint(cp);
      }
      return this.#fail(`entity &${ref}; is not defined (only XML's predefined entities are expanded)`, at + offset);
    });
  }

  #value(depth: number): PlistValue {
    if (++this.#count > this.#l.maxObjects) this.#fail(`more than ${this.#l.maxObjects} values`);
    const { name, empty, at } = this.#open();
    const text = (): string => (empty ? '' : this.#text(name));
    switch (name) {
      case 'dict': {
        if (depth >= this.#l.maxDepth) this.#fail(`nested more than ${this.#l.maxDepth} levels deep`, at);
        const out: PlistDict = {};
        if (empty) return out;
        for (;;) {
          this.#skip();
          if (this.#s.startsWith('</', this.#i)) {
            this.#close('dict');
            return out;
          }
          const k = this.#open();
          if (k.name !== 'key') this.#fail(`expected <key> in <dict>, found <${k.name}>`, k.at);
          const key = k.empty ? '' : this.#text('key');
          if (Object.prototype.hasOwnProperty.call(out, key)) this.#fail(`duplicate key "${key.slice(0, 64)}"`, k.at);
          this.#skip();
          if (this.#s.startsWith('</', this.#i)) this.#fail(`key "${key.slice(0, 64)}" has no value`);
          setKey(out, key, this.#value(depth + 1));
        }
      }
      case 'array': {
        if (depth >= this.#l.maxDepth) this.#fail(`nested more than ${this.#l.maxDepth} levels deep`, at);
        const out: PlistValue[] = [];
        if (empty) return out;
        for (;;) {
          this.#skip();
          if (this.#s.startsWith('</', this.#i)) {
            this.#close('array');
            return out;
          }
          out.push(this.#value(depth + 1));
        }
      }
      case 'string':
        return text();
      case 'integer': {
        const t = text().trim();
        if (!INTEGER.test(t)) this.#fail(`<integer> "${t.slice(0, 40)}" is not a decimal integer`, at);
        const n = Number(t);
        if (!Number.isSafeInteger(n)) this.#fail(`<integer> ${t.slice(0, 40)} is beyond 2^53`, at);
        return n;
      }
      case 'real': {
        const t = text().trim();
        const special = /^([+-])?(nan|inf|infinity)$/i.exec(t);
        if (special) return special[2]!.toLowerCase() === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
        if (!REAL.test(t)) this.#fail(`<real> "${t.slice(0, 40)}" is not a number`, at);
        return Number(t);
      }
      case 'true':
      case 'false':
        if (text().trim() !== '') this.#fail(`<${name}> must be empty`, at);
        return name === 'true';
      case 'date': {
        const t = text().trim();
        const m = DATE.exec(t);
        const d = m ? new Date(t) : undefined;
        if (!d || Number.isNaN(d.getTime()) || d.toISOString().slice(0, 19) !== t.slice(0, 19)) this.#fail(`<date> "${t.slice(0, 40)}" is not YYYY-MM-DDTHH:MM:SSZ`, at);
        return d;
      }
      case 'data': {
        const t = text().replace(/[ \t\r\n]+/g, '');
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(t) || t.length % 4 === 1) this.#fail('<data> is not base64', at);
        return Buffer.from(t, 'base64');
      }
      default:
        return this.#fail(`<${name}> is not a plist element`, at);
    }
  }
}

// ------------------------------------------------------------- binary reader

const CF_EPOCH_MS = Date.UTC(2001, 0, 1);
const HEADER = 8;
const TRAILER = 32;

class BinaryReader {
  readonly #b: Buffer;
  readonly #l: Required<PlistLimits>;
  #offsetSize = 0;
  #refSize = 0;
  #numObjects = 0;
  #tableOffset = 0;
  #count = 0;
  /** Decoded scalars by object index, so a shared string or data object is materialised once. */
  readonly #scalars = new Map<number, PlistValue>();
  /** Containers being expanded, to refuse a reference cycle. */
  readonly #path = new Set<number>();

  constructor(buf: Buffer, limits: Required<PlistLimits>) {
    this.#b = buf;
    this.#l = limits;
  }

  #fail(what: string): never {
    throw new PlistError(`binary plist: ${what}`);
  }

  /** An unsigned big-endian integer of 1–8 bytes, which must be a safe JS number. */
  #uint(pos: number, size: number, what: string): number {
    if (pos < 0 || pos + size > this.#b.length) this.#fail(`${what} runs past the end of the data`);
    let n = 0;
    for (let k = 0; k < size; k++) n = n * 256 + this.#b[pos + k]!;
    if (!Number.isSafeInteger(n)) this.#fail(`${what} is too large`);
    return n;
  }

  document(): PlistValue {
    const b = this.#b;
    if (b.subarray(0, 8).toString('latin1') !== 'bplist00') this.#fail(`version "${b.subarray(6, 8).toString('latin1')}" is not supported (only bplist00)`);
    if (b.length < HEADER + TRAILER + 1) this.#fail('too short to hold a trailer and an object');
    const t = b.length - TRAILER;
    this.#offsetSize = b[t + 6]!;
    this.#refSize = b[t + 7]!;
    if (this.#offsetSize < 1 || this.#offsetSize > 8) this.#fail(`offset size ${this.#offsetSize} is not 1–8`);
    if (this.#refSize < 1 || this.#refSize > 8) this.#fail(`object reference size ${this.#refSize} is not 1–8`);
    this.#numObjects = this.#uint(t + 8, 8, 'object count');
    const top = this.#uint(t + 16, 8, 'top object');
    this.#tableOffset = this.#uint(t + 24, 8, 'offset table position');
    if (this.#numObjects < 1) this.#fail('no objects');
    if (this.#numObjects > this.#l.maxObjects) this.#fail(`${this.#numObjects} objects, more than the limit of ${this.#l.maxObjects}`);
    if (top >= this.#numObjects) this.#fail('the top object is not in the offset table');
    if (this.#tableOffset < HEADER || this.#tableOffset + this.#numObjects * this.#offsetSize > t) this.#fail('the offset table is not between the header and the trailer');
    return this.#object(top, 0);
  }

  #offsetOf(ref: number): number {
    if (ref >= this.#numObjects) this.#fail(`reference ${ref} is beyond the ${this.#numObjects} objects`);
    const off = this.#uint(this.#tableOffset + ref * this.#offsetSize, this.#offsetSize, 'offset');
    if (off < HEADER || off >= this.#tableOffset) this.#fail(`object ${ref} is outside the object area`);
    return off;
  }

  /** Checks that `len` bytes from `pos` lie inside the object area. */
  #span(pos: number, len: number, what: string): void {
    if (len < 0 || pos + len > this.#tableOffset) this.#fail(`${what} runs past the object area`);
  }

  /** The count in a marker's low nibble, or in the integer object after it when the nibble is 0xF. */
  #length(pos: number, nibble: number): { len: number; start: number } {
    if (nibble !== 0xf) return { len: nibble, start: pos + 1 };
    this.#span(pos + 1, 1, 'length');
    const m = this.#b[pos + 1]!;
    if (m >> 4 !== 0x1 || (m & 0xf) > 3) this.#fail('a length that is not an integer of 1–8 bytes');
    const size = 1 << (m & 0xf);
    this.#span(pos + 2, size, 'length');
    return { len: this.#uint(pos + 2, size, 'length'), start: pos + 2 + size };
  }

  #object(ref: number, depth: number): PlistValue {
    if (++this.#count > this.#l.maxObjects) this.#fail(`more than ${this.#l.maxObjects} values (shared objects count each time they appear)`);
    const cached = this.#scalars.get(ref);
    if (cached !== undefined) return cached;
    const pos = this.#offsetOf(ref);
    const marker = this.#b[pos]!;
    const type = marker >> 4;
    const nibble = marker & 0xf;
    if (type === 0xa || type === 0xc || type === 0xd) return this.#container(ref, pos, type, nibble, depth);
    const v = this.#scalar(pos, type, nibble);
    this.#scalars.set(ref, v);
    return v;
  }

  #scalar(pos: number, type: number, nibble: number): PlistValue {
    const b = this.#b;
    switch (type) {
      case 0x0:
        if (nibble === 0x8) return false;
        if (nibble === 0x9) return true;
        return this.#fail(nibble === 0 ? 'null has no place in a plist' : `unknown marker 0x0${nibble.toString(16)}`);
      case 0x1: {
        if (nibble > 4) this.#fail(`integer of 2^${nibble} bytes`);
        const size = 1 << nibble;
        this.#span(pos + 1, size, 'integer');
        let v: bigint;
        if (size <= 4) v = BigInt(this.#uint(pos + 1, size, 'integer'));
        else if (size === 8) v = b.readBigInt64BE(pos + 1);
        else v = (b.readBigInt64BE(pos + 1) << 64n) | b.readBigUInt64BE(pos + 9); // 128-bit: CF's unsigned 64-bit values
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) this.#fail(`integer ${v} is beyond 2^53`);
        return Number(v);
      }
      case 0x2:
        if (nibble === 2) {
          this.#span(pos + 1, 4, 'real');
          return b.readFloatBE(pos + 1);
        }
        if (nibble === 3) {
          this.#span(pos + 1, 8, 'real');
          return b.readDoubleBE(pos + 1);
        }
        return this.#fail(`real of 2^${nibble} bytes`);
      case 0x3: {
        if (nibble !== 3) this.#fail('malformed date');
        this.#span(pos + 1, 8, 'date');
        const d = new Date(CF_EPOCH_MS + b.readDoubleBE(pos + 1) * 1000);
        if (Number.isNaN(d.getTime())) this.#fail('date out of range');
        return d;
      }
      case 0x4: {
        const { len, start } = this.#length(pos, nibble);
        this.#span(start, len, 'data');
        return Buffer.from(b.subarray(start, start + len));
      }
      case 0x5: {
        const { len, start } = this.#length(pos, nibble);
        this.#span(start, len, 'string');
        return b.toString('latin1', start, start + len);
      }
      case 0x6: {
        const { len, start } = this.#length(pos, nibble);
        this.#span(start, len * 2, 'string');
        return Buffer.from(b.subarray(start, start + len * 2)).swap16().toString('utf16le');
      }
      case 0x8: {
        const size = nibble + 1;
        if (size > 8) this.#fail('UID longer than 8 bytes');
        this.#span(pos + 1, size, 'UID');
        // NSKeyedArchiver's references, in the form its XML plists use.
        return { CF$UID: this.#uint(pos + 1, size, 'UID') };
      }
      default:
        return this.#fail(`unknown object marker 0x${type.toString(16)}${nibble.toString(16)}`);
    }
  }

  #container(ref: number, pos: number, type: number, nibble: number, depth: number): PlistValue {
    if (depth >= this.#l.maxDepth) this.#fail(`nested more than ${this.#l.maxDepth} levels deep`);
    if (this.#path.has(ref)) this.#fail(`object ${ref} contains itself`);
    const { len, start } = this.#length(pos, nibble);
    const refs = type === 0xd ? len * 2 : len;
    this.#span(start, refs * this.#refSize, type === 0xd ? 'dictionary' : 'array');
    const refAt = (k: number): number => this.#uint(start + k * this.#refSize, this.#refSize, 'reference');
    this.#path.add(ref);
    let out: PlistValue;
    if (type === 0xd) {
      const dict: PlistDict = {};
      for (let k = 0; k < len; k++) {
        const key = this.#object(refAt(k), depth + 1);
        if (typeof key !== 'string') this.#fail('a dictionary key that is not a string');
        if (Object.prototype.hasOwnProperty.call(dict, key)) this.#fail(`duplicate key "${key.slice(0, 64)}"`);
        setKey(dict, key, this.#object(refAt(len + k), depth + 1));
      }
      out = dict;
    } else {
      // 0xA array, 0xC set (read as an array).
      const arr: PlistValue[] = [];
      for (let k = 0; k < len; k++) arr.push(this.#object(refAt(k), depth + 1));
      out = arr;
    }
    this.#path.delete(ref);
    return out;
  }
}
