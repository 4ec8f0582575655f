// Admin API bearer tokens. Only the SHA-256 of a token is stored: a database
// dump does not hand out access. Tokens are random (32 bytes), so a plain
// digest is enough; lookups are by digest, so no secret is ever compared.
import { createHash, randomBytes } from 'node:crypto';
import type { Db } from './db.js';

export type TokenScope = 'read' | 'operate' | 'admin';
export const TOKEN_SCOPES: readonly TokenScope[] = ['read', 'operate', 'admin'];

export interface ApiToken {
  id: string;
  name: string;
  scope: TokenScope;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

/** read < operate < admin: a token may do what its scope and every lower scope allow. */
export const scopeAllows = (have: TokenScope, need: TokenScope): boolean => TOKEN_SCOPES.indexOf(have) >= TOKEN_SCOPES.indexOf(need);

const digest = (token: string): string => createHash('sha256').update(token).digest('hex');

export interface TokenStore {
  /** Creates a token; the secret is returned once and never stored. */
  create(name: string, scope: TokenScope): Promise<{ token: string; record: ApiToken }>;
  /** The token's record when it is valid and not revoked. */
  authenticate(token: string): Promise<ApiToken | undefined>;
  list(): Promise<ApiToken[]>;
  revoke(id: string): Promise<boolean>;
}

interface TokenRow {
  id: string;
  name: string;
  scope: TokenScope;
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

const toToken = (r: TokenRow): ApiToken => ({
  id: r.id,
  name: r.name,
  scope: r.scope,
  createdAt: r.created_at,
  lastUsedAt: r.last_used_at,
  revokedAt: r.revoked_at,
});

export function createTokenStore(db: Db): TokenStore {
  return {
    async create(name, scope) {
      const id = randomBytes(6).toString('hex');
      // The id is part of the token so logs can name a token without holding it.
      const token = `mst_${id}_${randomBytes(32).toString('base64url')}`;
      const r = await db.query<TokenRow>('INSERT INTO api_tokens (id, name, scope, token_sha256) VALUES ($1, $2, $3, $4) RETURNING *', [
        id,
        name,
        scope,
        digest(token),
      ]);
      return { token, record: toToken(r.rows[0]!) };
    },
    async authenticate(token) {
      if (!/^mst_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/.test(token)) return undefined;
      const r = await db.query<TokenRow>(
        'UPDATE api_tokens SET last_used_at = now() WHERE token_sha256 = $1 AND revoked_at IS NULL RETURNING *',
        [digest(token)],
      );
      return r.rows[0] ? toToken(r.rows[0]) : undefined;
    },
    async list() {
      return (await db.query<TokenRow>('SELECT * FROM api_tokens ORDER BY created_at')).rows.map(toToken);
    },
    async revoke(id) {
      return (await db.query('UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL', [id])).rowCount > 0;
    },
  };
}
