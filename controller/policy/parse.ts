// Text → YAML documents with source positions. Pure: no file system here.
// Every failure becomes a Diagnostic with file:line:column; nothing throws.
import { LineCounter, parseAllDocuments, isMap, isSeq, isPair, isScalar, isAlias, type Document, type Node } from 'yaml';
import type { Diagnostic, SourcePosition } from './diagnostics.js';

export const LIMITS = {
  /** Largest policy file read; a policy file is a few KiB, so 4 MiB is generous. */
  maxFileBytes: 4 * 1024 * 1024,
  /** Aliases expanded per document: stops "billion laughs" alias bombs. */
  maxAliasCount: 100,
  /** Deepest nesting of maps and sequences accepted in a document. */
  maxDepth: 64,
};

export type PathSegment = string | number;

/** One YAML document from one file, with what is needed to point back into it. */
export interface ParsedDocument {
  file: string;
  /** 0-based index of the document within its file. */
  index: number;
  /** The plain data (aliases expanded, merge keys applied). */
  value: unknown;
  /** Position of a path inside the document; `key: true` points at the map key instead of its value. */
  locate(path: readonly PathSegment[], opts?: { key?: boolean }): SourcePosition;
}

export interface ParseResult {
  documents: ParsedDocument[];
  diagnostics: Diagnostic[];
}

const fileLevel = (file: string, code: string, message: string): Diagnostic => ({
  file,
  line: 0,
  column: 0,
  severity: 'error',
  code,
  message,
});

/** Rejects content that is not text before YAML sees it. */
export function checkText(file: string, bytes: Uint8Array): Diagnostic | string {
  if (bytes.length > LIMITS.maxFileBytes) {
    return fileLevel(file, 'file-too-large', `file is ${formatBytes(bytes.length)}, over the ${formatBytes(LIMITS.maxFileBytes)} limit for a policy file`);
  }
  if (bytes.includes(0)) return fileLevel(file, 'not-text', 'file is binary (contains NUL bytes), not YAML text');
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return fileLevel(file, 'not-text', 'file is not valid UTF-8 text');
  }
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(n % (1024 * 1024) ? 1 : 0)} MiB`;
  if (n >= 1024) return `${Math.round(n / 1024)} KiB`;
  return `${n} bytes`;
}

/** Parses every document of a YAML file. */
export function parseYamlFile(file: string, text: string): ParseResult {
  const lineCounter = new LineCounter();
  const diagnostics: Diagnostic[] = [];
  const documents: ParsedDocument[] = [];
  const at = (offset: number): { line: number; column: number } => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };

  let docs: Document.Parsed[];
  try {
    // YAML 1.2 core schema: no implicit timestamps or octal surprises; merge keys allowed
    // because admins use `<<: *base` to share blocks.
    docs = parseAllDocuments(text, { lineCounter, uniqueKeys: true, merge: true, prettyErrors: false }) as Document.Parsed[];
  } catch (e) {
    return { documents, diagnostics: [fileLevel(file, 'yaml', `cannot parse YAML: ${(e as Error).message}`)] };
  }
  if (!Array.isArray(docs)) return { documents, diagnostics }; // an empty stream

  docs.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      // A stack overflow can surface at several depths; one report says it all.
      const exhausted = doc.errors.find((e) => e.code === 'RESOURCE_EXHAUSTION');
      for (const err of exhausted ? [exhausted] : doc.errors) {
        diagnostics.push({ file, ...at(err.pos[0]), severity: 'error', code: 'yaml', message: yamlMessage(err.code, err.message) });
      }
      return;
    }
    if (doc.contents === null) return; // an empty document between separators
    const shapeIssue = checkShape(doc.contents as Node);
    if (shapeIssue) {
      diagnostics.push({ file, ...at(shapeIssue.offset), severity: 'error', code: shapeIssue.code, message: shapeIssue.message });
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: LIMITS.maxAliasCount });
    } catch (e) {
      const msg = /alias/i.test((e as Error).message)
        ? `too many alias expansions (over ${LIMITS.maxAliasCount}): anchors and aliases may share blocks, not multiply them`
        : `cannot read YAML document: ${(e as Error).message}`;
      diagnostics.push({ file, ...at(doc.range[0]), severity: 'error', code: 'yaml', message: msg });
      return;
    }
    documents.push({
      file,
      index,
      value,
      locate(path, opts) {
        return { file, ...at(offsetOf(doc, path, opts?.key ?? false)) };
      },
    });
  });
  return { documents, diagnostics };
}

function yamlMessage(code: string, message: string): string {
  const first = message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
  switch (code) {
    case 'DUPLICATE_KEY':
      return 'duplicate key: each key may appear only once in a mapping';
    case 'RESOURCE_EXHAUSTION':
      return `document too deeply nested or too large to read (${first})`;
    default:
      return first.charAt(0).toLowerCase() + first.slice(1);
  }
}

/**
 * Finds what the data model cannot hold: nesting past the limit, and numbers
 * with no JSON form (.inf, .nan), which could not be hashed. Iterative, so a
 * deep document cannot overflow the stack here.
 */
function checkShape(root: Node): { offset: number; code: string; message: string } | undefined {
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (isScalar(node) && typeof node.value === 'number' && !Number.isFinite(node.value)) {
      return { offset: node.range?.[0] ?? 0, code: 'yaml', message: `${String(node.source ?? node.value)} is not a finite number; policy values must be expressible in JSON` };
    }
    if (isMap(node) || isSeq(node)) {
      if (depth > LIMITS.maxDepth) return { offset: node.range?.[0] ?? 0, code: 'too-deep', message: `nesting deeper than ${LIMITS.maxDepth} levels` };
      for (const item of node.items as unknown[]) {
        if (isPair(item)) stack.push([item.value, depth + 1]);
        else stack.push([item, depth + 1]);
      }
    }
  }
  return undefined;
}

/** Walks the YAML node tree along a data path; stops at the deepest node that exists. */
function offsetOf(doc: Document.Parsed, path: readonly PathSegment[], wantKey: boolean): number {
  let node: unknown = doc.contents;
  let offset = (node as Node | null)?.range?.[0] ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
      if (!pair) return offset;
      const last = i === path.length - 1;
      if (last && wantKey && isScalar(pair.key) && pair.key.range) return pair.key.range[0];
      node = pair.value;
      const r = (node as Node | null)?.range ?? (isScalar(pair.key) ? pair.key.range : undefined);
      if (r) offset = r[0];
    } else if (isSeq(node) && typeof seg === 'number') {
      node = node.items[seg];
      const r = (node as Node | null)?.range;
      if (!r) return offset;
      offset = r[0];
    } else {
      return offset;
    }
  }
  return offset;
}
