// The one XML reader and writer of the Windows protocols (SOAP for MS-MDE2 /
// MS-XCEP / MS-WSTEP, SyncML for OMA-DM), on fast-xml-parser.
//
// Reading keeps document order (a SyncML body is a sequence of commands whose
// order matters) and hands back a small element tree. Bounds come first: a
// size limit before parsing, a nesting limit while parsing, and no entity
// other than XML's five and character references is ever expanded — any
// DOCTYPE (SOAP and SyncML never carry one) and any `<!ENTITY` is refused
// outright, found by a plain scan rather than a regular expression (a
// pattern such as /<!DOCTYPE[^>]*\[/ rescans the rest of the input from
// every `<!DOCTYPE`: quadratic, seconds of the only thread for a few hundred
// KiB), so a billion-laughs body costs nothing. Namespace prefixes are dropped from
// names (`s:Envelope` → `Envelope`) and kept as `prefix` for whoever needs
// them; `xmlns` declarations stay in `attrs`.
import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';

export class XmlError extends Error {
  override name = 'XmlError';
}

export interface XmlElement {
  /** Local name, without any namespace prefix. */
  name: string;
  /** The prefix the element was written with ('' for none). */
  prefix: string;
  /** Attributes by local name (prefixes dropped, `xmlns` and `xmlns:x` kept as written). */
  attrs: Record<string, string>;
  children: XmlElement[];
  /** Text content, concatenated and trimmed ('' for none). */
  text: string;
}

export interface XmlLimits {
  /** Largest input accepted, bytes. Default 1 MiB. */
  maxBytes?: number;
  /** Deepest element nesting. Default 32. */
  maxDepth?: number;
}

const DEFAULTS: Required<XmlLimits> = { maxBytes: 1024 * 1024, maxDepth: 32 };

type Ordered = Record<string, unknown> & { ':@'?: Record<string, string> };

const parserFor = (maxDepth: number) =>
  new XMLParser({
    preserveOrder: true,
    ignoreAttributes: false,
    attributeNamePrefix: '',
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: true,
    // Only XML's own five entities and character references (an object here
    // means exactly these, and turns character references on); DOCTYPE
    // entities are refused before parsing.
    processEntities: true,
    htmlEntities: XML_ENTITIES as unknown as boolean,
    ignoreDeclaration: true,
    ignorePiTags: true,
    commentPropName: false,
    maxNestedTags: maxDepth,
  });
const XML_ENTITIES = { amp: '&', apos: "'", gt: '>', lt: '<', quot: '"' };
const parsers = new Map<number, XMLParser>();

function split(qname: string): { prefix: string; name: string } {
  const i = qname.indexOf(':');
  return i < 0 ? { prefix: '', name: qname } : { prefix: qname.slice(0, i), name: qname.slice(i + 1) };
}

function toElement(node: Ordered, depth: number, maxDepth: number): XmlElement | string | undefined {
  if (depth > maxDepth) throw new XmlError(`nested more than ${maxDepth} levels deep`);
  const key = Object.keys(node).find((k) => k !== ':@');
  if (key === undefined) return undefined;
  if (key === '#text') return String(node[key] ?? '');
  const { prefix, name } = split(key);
  const attrs: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [k, v] of Object.entries(node[':@'] ?? {})) {
    const a = k.startsWith('xmlns') ? k : split(k).name;
    attrs[a] = String(v);
  }
  const children: XmlElement[] = [];
  let text = '';
  for (const c of (node[key] as Ordered[]) ?? []) {
    const x = toElement(c, depth + 1, maxDepth);
    if (typeof x === 'string') text += x;
    else if (x) children.push(x);
  }
  return { name, prefix, attrs, children, text: text.trim() };
}

/**
 * Where `<!` followed by `word` (ASCII letters, any case) first occurs, or -1.
 * One forward pass of indexOf: linear in the input whatever it holds.
 */
function declarationAt(text: string, word: string): number {
  for (let i = text.indexOf('<!'); i >= 0; i = text.indexOf('<!', i + 2)) {
    let k = 0;
    while (k < word.length && (text.charCodeAt(i + 2 + k) | 0x20) === (word.charCodeAt(k) | 0x20)) k++;
    if (k === word.length) return i;
  }
  return -1;
}

/**
 * Whether elements nest deeper than `max` (the root is level 1), by one
 * forward pass that only counts tags: the validator would otherwise keep a
 * stack as deep as the input and word an error listing every unclosed tag
 * (half a second for 1 MiB of `<a>`). Exact for well-formed XML (quoted
 * attribute values, comments, CDATA and processing instructions are
 * skipped), so it refuses nothing the parser would accept; whatever it cannot
 * follow it leaves to the validator.
 */
function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let i = text.indexOf('<');
  while (i >= 0) {
    const next = text.charCodeAt(i + 1);
    let end: number;
    if (next === 0x2f /* </ */) {
      depth--;
      end = text.indexOf('>', i + 2);
    } else if (next === 0x3f /* <? */) {
      end = text.indexOf('?>', i + 2);
    } else if (next === 0x21 /* <! */) {
      end = text.startsWith('<!--', i) ? text.indexOf('-->', i + 4) : text.startsWith('<![CDATA[', i) ? text.indexOf(']]>', i + 9) : text.indexOf('>', i + 2);
    } else {
      // A start tag ends at the first > outside a quoted attribute value.
      let quote = 0;
      for (end = i + 1; end < text.length; end++) {
        const c = text.charCodeAt(end);
        if (quote) {
          if (c === quote) quote = 0;
        } else if (c === 0x22 || c === 0x27) quote = c;
        else if (c === 0x3e) break;
      }
      if (end >= text.length) return false;
      if (text.charCodeAt(end - 1) !== 0x2f /* not <x/> */ && ++depth > max) return true;
    }
    if (end < 0) return false;
    i = text.indexOf('<', end + 1);
  }
  return false;
}

/** The parser's own messages can quote the input (a tag name, every unclosed tag): keep them short. */
const short = (msg: string): string => (msg.length > 200 ? `${msg.slice(0, 200)}…` : msg);

/** Parses one XML document into its root element. Throws XmlError on anything malformed or over a limit. */
export function parseXml(input: string | Buffer, limits: XmlLimits = {}): XmlElement {
  const l = { ...DEFAULTS, ...limits };
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.length;
  if (size === 0) throw new XmlError('empty body');
  if (size > l.maxBytes) throw new XmlError(`body of ${size} bytes is over the limit of ${l.maxBytes}`);
  let text: string;
  if (typeof input === 'string') text = input;
  else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(input);
    } catch {
      throw new XmlError('not valid UTF-8');
    }
  }
  if (declarationAt(text, 'ENTITY') >= 0) throw new XmlError('entity declarations are refused');
  if (declarationAt(text, 'DOCTYPE') >= 0) throw new XmlError('a DOCTYPE is refused (SOAP and SyncML never carry one)');
  if (nestsDeeperThan(text, l.maxDepth)) throw new XmlError(`nested more than ${l.maxDepth} levels deep`);
  const valid = XMLValidator.validate(text, { allowBooleanAttributes: false });
  if (valid !== true) throw new XmlError(`malformed XML at line ${valid.err.line}, column ${valid.err.col}: ${short(valid.err.msg)}`);
  let parser = parsers.get(l.maxDepth);
  if (!parser) parsers.set(l.maxDepth, (parser = parserFor(l.maxDepth)));
  let doc: Ordered[];
  try {
    doc = parser.parse(text) as Ordered[];
  } catch (e) {
    throw new XmlError(`cannot read the XML: ${short((e as Error).message)}`);
  }
  const roots = doc.map((n) => toElement(n, 1, l.maxDepth)).filter((x): x is XmlElement => typeof x === 'object');
  if (roots.length !== 1) throw new XmlError(roots.length ? 'more than one root element' : 'no root element');
  return roots[0]!;
}

// ------------------------------------------------------------------ navigating

/** The first child with this local name. */
export const child = (e: XmlElement | undefined, name: string): XmlElement | undefined => e?.children.find((c) => c.name === name);
/** Every child with this local name. */
export const children = (e: XmlElement | undefined, name: string): XmlElement[] => e?.children.filter((c) => c.name === name) ?? [];
/** Follows a path of local names from `e`; undefined when any step is missing. */
export function path(e: XmlElement | undefined, ...names: string[]): XmlElement | undefined {
  let at = e;
  for (const n of names) at = child(at, n);
  return at;
}
/** The text at a path of local names, or undefined. */
export const textAt = (e: XmlElement | undefined, ...names: string[]): string | undefined => path(e, ...names)?.text;

// ------------------------------------------------------------------ writing

/** An element to write: `name` is written as given, prefix included (`s:Envelope`). */
export interface XmlNode {
  name: string;
  attrs?: Record<string, string | undefined>;
  /** Child elements and text, in order; undefined entries are skipped. */
  children?: ReadonlyArray<XmlNode | string | undefined>;
}

/** Builds a node; `children` may mix elements and text. */
export const el = (name: string, attrs?: Record<string, string | undefined>, ...kids: Array<XmlNode | string | undefined>): XmlNode => ({ name, ...(attrs ? { attrs } : {}), children: kids });

const builder = new XMLBuilder({ preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: '', processEntities: true, suppressEmptyNode: true, format: false });

function toOrdered(n: XmlNode): Ordered {
  const kids: Ordered[] = [];
  for (const c of n.children ?? []) {
    if (c === undefined) continue;
    kids.push(typeof c === 'string' ? { '#text': c } : toOrdered(c));
  }
  const o: Ordered = { [n.name]: kids };
  const attrs = Object.fromEntries(Object.entries(n.attrs ?? {}).filter((x): x is [string, string] => x[1] !== undefined));
  if (Object.keys(attrs).length) o[':@'] = attrs;
  return o;
}

// eslint-disable-next-line no-control-regex
const XML_ILLEGAL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;

function check(n: XmlNode | string): void {
  if (typeof n === 'string') {
    if (XML_ILLEGAL.test(n)) throw new XmlError('text with a character XML cannot carry');
    return;
  }
  for (const v of Object.values(n.attrs ?? {})) if (v !== undefined && XML_ILLEGAL.test(v)) throw new XmlError(`attribute of ${n.name} with a character XML cannot carry`);
  for (const c of n.children ?? []) if (c !== undefined) check(c);
}

/** Serializes a node (text and attribute values escaped), with an XML declaration when asked. */
export function writeXml(root: XmlNode, o: { declaration?: boolean } = {}): string {
  check(root);
  const body = builder.build([toOrdered(root)]) as string;
  return (o.declaration ? '<?xml version="1.0" encoding="utf-8"?>' : '') + body;
}

const prettyBuilder = new XMLBuilder({ preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: '', processEntities: true, suppressEmptyNode: true, format: true, indentBy: '  ' });

const toNode = (e: XmlElement): XmlNode => ({ name: e.prefix ? `${e.prefix}:${e.name}` : e.name, attrs: e.attrs, children: e.children.length ? e.children.map(toNode) : e.text ? [e.text] : [] });

/** The same document indented for a person to read (`muster render`); never for the wire. */
export function prettyXml(xml: string): string {
  const body = prettyBuilder.build([toOrdered(toNode(parseXml(xml, { maxBytes: 64 * 1024 * 1024 })))]) as string;
  return `<?xml version="1.0" encoding="utf-8"?>\n${body.trim()}\n`;
}
