// A thin layer over node-forge's ASN.1: a bounded parser (size and depth are
// checked before anything else looks at device input), terse builders, and
// readers that throw one plain Asn1FormatError instead of returning undefined.
// forge works on "binary strings" (one char per byte); Buffers are converted
// at this edge so the rest of the module can use either.
import forge from 'node-forge';

const { asn1 } = forge;
export type Asn1 = forge.asn1.Asn1;
export const Class = asn1.Class;
export const Type = asn1.Type;

/** Device input that is not the ASN.1 we expect: the protocol answers it with its "bad request". */
export class Asn1FormatError extends Error {
  override name = 'Asn1FormatError';
}

/** Deepest nesting a SCEP message needs is ~20 (ContentInfo → … → certificate extension); 40 leaves room. */
export const MAX_DEPTH = 40;

/**
 * Parses DER (and BER's indefinite lengths, which some clients use) with a
 * depth limit, requiring that the whole input is one element. forge's typings
 * omit the options object, hence the cast.
 */
export function parseDer(bytes: Buffer | string, what: string, maxBytes = Infinity): Asn1 {
  const len = typeof bytes === 'string' ? bytes.length : bytes.length;
  if (len === 0) throw new Asn1FormatError(`${what}: empty`);
  if (len > maxBytes) throw new Asn1FormatError(`${what}: ${len} bytes, more than ${maxBytes}`);
  const bin = typeof bytes === 'string' ? bytes : bytes.toString('binary');
  const fromDer = asn1.fromDer as unknown as (b: string, o: { strict: boolean; parseAllBytes: boolean; decodeBitStrings: boolean; maxDepth: number }) => Asn1;
  try {
    return fromDer(bin, { strict: true, parseAllBytes: true, decodeBitStrings: true, maxDepth: MAX_DEPTH });
  } catch (e) {
    throw new Asn1FormatError(`${what}: not valid ASN.1 (${(e as Error).message.split('\n')[0]})`);
  }
}

export const toDer = (node: Asn1): string => asn1.toDer(node).getBytes();
export const toBuffer = (bin: string): Buffer => Buffer.from(bin, 'binary');
export const toBin = (buf: Buffer): string => buf.toString('binary');

// ------------------------------------------------------------------ builders

export const seq = (items: Asn1[]): Asn1 => asn1.create(Class.UNIVERSAL, Type.SEQUENCE, true, items);
export const set = (items: Asn1[]): Asn1 => asn1.create(Class.UNIVERSAL, Type.SET, true, items);
export const oid = (id: string): Asn1 => asn1.create(Class.UNIVERSAL, Type.OID, false, asn1.oidToDer(id).getBytes());
export const octets = (bin: string): Asn1 => asn1.create(Class.UNIVERSAL, Type.OCTETSTRING, false, bin);
export const prim = (type: number, bin: string): Asn1 => asn1.create(Class.UNIVERSAL, type, false, bin);
export const printable = (s: string): Asn1 => asn1.create(Class.UNIVERSAL, Type.PRINTABLESTRING, false, s);
export const nul = (): Asn1 => asn1.create(Class.UNIVERSAL, Type.NULL, false, '');
export const int = (n: number): Asn1 => asn1.create(Class.UNIVERSAL, Type.INTEGER, false, asn1.integerToDer(n).getBytes());
/** [n] constructed context tag: EXPLICIT wrapping, or IMPLICIT SET/SEQUENCE OF. */
export const ctx = (n: number, items: Asn1[]): Asn1 => asn1.create(Class.CONTEXT_SPECIFIC, n, true, items);
/** [n] primitive context tag: IMPLICIT OCTET STRING and the like. */
export const ctxPrim = (n: number, bin: string): Asn1 => asn1.create(Class.CONTEXT_SPECIFIC, n, false, bin);
export const algorithm = (id: string, params: Asn1 | null = nul()): Asn1 => seq(params ? [oid(id), params] : [oid(id)]);

/**
 * A DER SET OF: elements sorted by their encodings (X.690 11.6). Signed
 * attributes are hashed as a SET OF, and verifiers such as Go's encoding/asn1
 * re-encode them sorted, so an unsorted set would fail their signature check.
 */
export function derSet(items: Asn1[]): Asn1 {
  const encoded = items.map((i) => ({ i, d: toBuffer(toDer(i)) }));
  encoded.sort((a, b) => Buffer.compare(a.d, b.d));
  return set(encoded.map((e) => e.i));
}

// ------------------------------------------------------------------ readers

function describe(n: Asn1 | undefined): string {
  if (!n) return 'nothing';
  return n.tagClass === Class.UNIVERSAL ? `universal tag ${n.type}` : `[${n.type}] (class 0x${n.tagClass.toString(16)})`;
}

/** The node's children, asserting it is a constructed element of the given tag. */
export function children(n: Asn1 | undefined, what: string, type: number = Type.SEQUENCE, tagClass: number = Class.UNIVERSAL): Asn1[] {
  if (!n || n.tagClass !== tagClass || n.type !== type || !n.constructed || !Array.isArray(n.value)) {
    throw new Asn1FormatError(`${what}: expected ${tagClass === Class.UNIVERSAL ? `universal tag ${type}` : `[${type}]`}, found ${describe(n)}`);
  }
  return n.value;
}

/** A primitive element's content octets. */
export function primitive(n: Asn1 | undefined, what: string, type: number, tagClass: number = Class.UNIVERSAL): string {
  if (!n || n.tagClass !== tagClass || n.type !== type || n.constructed || typeof n.value !== 'string') {
    throw new Asn1FormatError(`${what}: expected primitive ${tagClass === Class.UNIVERSAL ? `universal tag ${type}` : `[${type}]`}, found ${describe(n)}`);
  }
  return n.value;
}

export const readOid = (n: Asn1 | undefined, what: string): string => asn1.derToOid(primitive(n, what, Type.OID));

/**
 * OCTET STRING content, primitive or BER-constructed (a constructed string is
 * the concatenation of its segments). `tagClass`/`type` allow IMPLICIT tags.
 */
export function octetContent(n: Asn1 | undefined, what: string, type: number = Type.OCTETSTRING, tagClass: number = Class.UNIVERSAL): string {
  if (n && n.tagClass === tagClass && n.type === type && n.constructed && Array.isArray(n.value)) {
    return n.value.map((seg) => octetContent(seg, what)).join('');
  }
  return primitive(n, what, type, tagClass);
}

/** The algorithm OID of an AlgorithmIdentifier. */
export const algorithmOid = (n: Asn1 | undefined, what: string): string => readOid(children(n, what)[0], `${what} algorithm`);

/** A character string as text: UTF8String and BMPString decoded, the 8-bit string types as Latin-1. */
export function readString(n: Asn1 | undefined, what: string): string {
  if (!n || n.tagClass !== Class.UNIVERSAL || n.constructed || typeof n.value !== 'string') {
    throw new Asn1FormatError(`${what}: expected a character string, found ${describe(n)}`);
  }
  const raw = toBuffer(n.value);
  switch (n.type as number) {
    case Type.UTF8:
      return raw.toString('utf8');
    case Type.BMPSTRING:
      if (raw.length % 2) throw new Asn1FormatError(`${what}: BMPString of odd length`);
      return raw.swap16().toString('utf16le');
    case Type.PRINTABLESTRING:
    case Type.IA5STRING:
    case 20: // TeletexString
    case 26: // VisibleString
      return raw.toString('latin1');
    default:
      throw new Asn1FormatError(`${what}: expected a character string, found ${describe(n)}`);
  }
}

export interface CertParts {
  tbs: Asn1;
  serial: Asn1;
  issuer: Asn1;
  subject: Asn1;
}

/** The fields of a certificate that identify it, as the original ASN.1 (so their encodings are kept byte for byte). */
export function certParts(cert: Asn1, what = 'certificate'): CertParts {
  const tbs = children(cert, what)[0];
  const f = children(tbs, `${what} tbsCertificate`);
  const i = f[0]?.tagClass === Class.CONTEXT_SPECIFIC && f[0].type === 0 ? 1 : 0;
  const serial = f[i];
  primitive(serial, `${what} serialNumber`, Type.INTEGER);
  const issuer = f[i + 2];
  const subject = f[i + 4];
  children(issuer, `${what} issuer`);
  children(subject, `${what} subject`);
  return { tbs: tbs!, serial: serial!, issuer: issuer!, subject: subject! };
}
