// The Apple endpoints over HTTP (fastify inject): plists in, plists out,
// every request signed with Mdm-Signature the way devices sign (openssl cms,
// detached, SHA-1, no attributes).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../controller/store/index.js';
import { decodePlist, encodePlist } from '../../protocols/apple/plist.js';
import { appleRoutes } from '../../protocols/apple/routes.js';
import { CertificateAuthority, generateCa } from '../../protocols/pki/ca.js';
import { createAppleService } from '../../protocols/apple/service.js';
import { declaration } from '../../protocols/apple/declarations.js';
import { testDatabase, type TestDatabase } from '../support/db.js';
import { missingTool } from '../support/tools.js';

const skip = missingTool('openssl', 'openssl');
const UDID = '00008030-001A2B3C4D5E602E';
const quiet = { info: () => {}, warn: () => {} };

describe.skipIf(!!skip)('Apple MDM endpoints', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muster-apple-routes-'));
  let tdb: TestDatabase;
  let store: Store;
  let app: FastifyInstance;

  const sign = (body: Buffer) => {
    writeFileSync(join(dir, 'body'), body);
    execFileSync('openssl', ['cms', '-sign', '-binary', '-noattr', '-md', 'sha1', '-in', join(dir, 'body'), '-signer', join(dir, 'dev.pem'), '-inkey', join(dir, 'dev.key'), '-outform', 'DER', '-out', join(dir, 'sig')]);
    return readFileSync(join(dir, 'sig')).toString('base64');
  };
  const put = (url: string, dict: Record<string, unknown> | Buffer, opts: { type?: string; signed?: boolean } = {}) => {
    const body = Buffer.isBuffer(dict) ? dict : encodePlist({ UDID, ...dict });
    return app.inject({
      method: 'PUT',
      url,
      payload: body,
      headers: { 'content-type': opts.type ?? 'application/x-apple-aspen-mdm-checkin', ...(opts.signed === false ? {} : { 'mdm-signature': sign(body) }) },
    });
  };

  beforeAll(async () => {
    tdb = await testDatabase('pglite');
    store = await tdb.open();
    const ca: CertificateAuthority = generateCa({ keyBits: 2048 });
    const keys = forge.pki.rsa.generateKeyPair(2048);
    const cert = ca.issue({ publicKey: keys.publicKey, subject: [{ name: 'commonName', value: 'device' }] });
    writeFileSync(join(dir, 'dev.pem'), forge.pki.certificateToPem(cert));
    writeFileSync(join(dir, 'dev.key'), forge.pki.privateKeyToPem(keys.privateKey));
    const der = CertificateAuthority.toDer(cert);
    await store.identities.add({ certSha256: createHash('sha256').update(der).digest('hex'), platform: 'apple', protocol: 'apple-scep', serialNumber: cert.serialNumber, notAfter: cert.validity.notAfter });
    app = Fastify();
    await app.register(appleRoutes, { service: createAppleService({ store, log: quiet, inventoryOnEnroll: false }), auth: { modes: ['signature'], ca }, log: quiet });
  });
  afterAll(async () => {
    await app?.close();
    await tdb?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('enrolls through Authenticate and TokenUpdate, then serves DeviceConfigured on the command channel', async () => {
    expect((await put('/mdm/apple/checkin', { MessageType: 'Authenticate', Topic: 'com.apple.mgmt.External.x', SerialNumber: 'C02X' })).statusCode).toBe(200);
    // Check-ins may also arrive on the ServerURL, told apart by their content type.
    const tu = await put('/mdm/apple/connect', { MessageType: 'TokenUpdate', Topic: 'com.apple.mgmt.External.x', Token: Buffer.alloc(32, 7), PushMagic: 'magic', AwaitingConfiguration: true });
    expect(tu.statusCode).toBe(200);
    const idle = await put('/mdm/apple/connect', { Status: 'Idle' }, { type: 'application/x-apple-aspen-mdm' });
    expect(idle.statusCode).toBe(200);
    expect(idle.headers['content-type']).toMatch(/xml/);
    const cmd = decodePlist(idle.rawPayload) as { CommandUUID: string; Command: { RequestType: string } };
    expect(cmd.Command.RequestType).toBe('DeviceConfigured');
    const ack = await put('/mdm/apple/connect', { Status: 'Acknowledged', CommandUUID: cmd.CommandUUID }, { type: 'application/x-apple-aspen-mdm' });
    expect(ack.statusCode).toBe(200);
    expect(ack.rawPayload.length).toBe(0);
    expect((await store.commands.get(cmd.CommandUUID))!.state).toBe('completed');
  });

  it('refuses an unsigned or tampered request with 403, never 401', async () => {
    const unsigned = await put('/mdm/apple/connect', { Status: 'Idle' }, { type: 'application/x-apple-aspen-mdm', signed: false });
    expect(unsigned.statusCode).toBe(403);
    const body = encodePlist({ UDID, Status: 'Idle' });
    const tampered = await app.inject({ method: 'PUT', url: '/mdm/apple/connect', payload: Buffer.concat([body, Buffer.from('\n')]), headers: { 'content-type': 'application/x-apple-aspen-mdm', 'mdm-signature': sign(body) } });
    expect(tampered.statusCode).toBe(403);
  });

  it('answers an unreadable report with an empty 200, and an unreadable check-in with 400', async () => {
    const garbage = Buffer.from('<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY x "boom">]><plist><dict><key>a</key><string>&x;</string></dict></plist>');
    const r = await app.inject({ method: 'PUT', url: '/mdm/apple/connect', payload: garbage, headers: { 'content-type': 'application/x-apple-aspen-mdm', 'mdm-signature': sign(garbage) } });
    expect(r.statusCode).toBe(200);
    expect(r.rawPayload.length).toBe(0);
    const c = await app.inject({ method: 'PUT', url: '/mdm/apple/checkin', payload: garbage, headers: { 'content-type': 'application/x-apple-aspen-mdm-checkin' } });
    expect(c.statusCode).toBe(400);
  });

  it('serves Declarative Device Management as JSON from the declarations the driver stored', async () => {
    const ddm = (endpoint: string, data?: Buffer) => put('/mdm/apple/checkin', { MessageType: 'DeclarativeManagement', Endpoint: endpoint, ...(data ? { Data: data } : {}) });
    const empty = await ddm('tokens');
    expect(empty.statusCode).toBe(200);
    expect(empty.headers['content-type']).toMatch(/^application\/json/);
    const emptyToken = empty.json().SyncTokens.DeclarationsToken;
    const d = declaration('com.apple.configuration.softwareupdate.enforcement.specific', 'dev.muster.bundle.u.softwareupdate', { TargetOSVersion: '15.2', TargetLocalDateTime: '2026-12-15T17:00:00' });
    await store.devices.patchEnrollmentState(UDID, { declarations: { [d.Identifier]: d }, declarationsAt: '2026-11-23T10:00:00.000Z' });
    const tokens = (await ddm('tokens')).json();
    expect(tokens.SyncTokens).toEqual({ DeclarationsToken: expect.any(String), Timestamp: '2026-11-23T10:00:00Z' });
    expect(tokens.SyncTokens.DeclarationsToken).not.toBe(emptyToken);
    const items = (await ddm('declaration-items')).json();
    expect(items.DeclarationsToken).toBe(tokens.SyncTokens.DeclarationsToken);
    expect(items.Declarations.Configurations).toContainEqual({ Identifier: d.Identifier, ServerToken: d.ServerToken });
    expect((await ddm(`declaration/configuration/${d.Identifier}`)).json()).toEqual(d);
    expect((await ddm('declaration/configuration/dev.muster.nope')).statusCode).toBe(404);
    expect((await ddm('status', Buffer.from('{not json'))).statusCode).toBe(400);
    expect((await ddm('status', Buffer.from(JSON.stringify({ StatusItems: {} })))).statusCode).toBe(200);
  });

  it('declines UserAuthenticate with 410 and returns the bootstrap token as a plist', async () => {
    expect((await put('/mdm/apple/checkin', { MessageType: 'UserAuthenticate', UserID: 'u1' })).statusCode).toBe(410);
    expect((await put('/mdm/apple/checkin', { MessageType: 'SetBootstrapToken', BootstrapToken: Buffer.from('bt') })).statusCode).toBe(200);
    const g = await put('/mdm/apple/checkin', { MessageType: 'GetBootstrapToken' });
    expect(decodePlist(g.rawPayload)).toEqual({ BootstrapToken: Buffer.from('bt') });
  });
});
