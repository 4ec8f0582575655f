// The SCEP certificate authority: what the rest of Muster imports.
export { CaError, CertificateAuthority, formatName, generateCa, loadOrCreateCa, sha256Fingerprint } from '../../pki/ca.js';
export type { CaFileOptions, CaPemOptions, CaSubject, Eku, IssueRequest } from '../../pki/ca.js';
export { challengeEquals, OneTimeChallenges, StaticChallenge } from './challenge.js';
export type { ChallengeStore, OneTimeOptions } from './challenge.js';
export { CA_CAPS, createScepHandler, DEFAULT_MAX_BODY_BYTES, silentScepLogger } from './server.js';
export type { ScepIssued, ScepLogger, ScepOptions, ScepRequest, ScepResponse } from './server.js';
export { scepRoutes } from './routes.js';
export type { ScepRouteOptions } from './routes.js';
export { FailInfo } from './cms.js';
export { MessageType, PkiStatus } from './message.js';
export { buildCsr, buildPkiRequest, readCertRep, selfSignedCert } from './client.js';
export type { CertRepResult, PkiRequestOptions } from './client.js';
