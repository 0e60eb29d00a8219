/**
 * @keyferry/pkcs11 — the one typed door to PKCS#11 tokens for the server (HSM custody of CA
 * keys), the CLI (factory root key), the agent (the device's secure element) and the
 * simulator (simulated SE05x tokens).
 */
export { P256_EC_PARAMS, p256SpkiFromEcPoint } from './ec-public-key.ts';
export { isSessionLost } from './failures.ts';
export { type InitTokenOptions, initToken } from './init-token.ts';
export { findOpensslPkcs11Engine, findSofthsmModule } from './install-paths.ts';
export { type EngineKeyUriOptions, opensslEngineKeyUri } from './key-uri.ts';
export { DEFAULT_SETTING_NAMES, releaseModule, type TokenSettingNames } from './module.ts';
export type { PutCertificateOptions, PutDataOptions, TokenObjectClass, TokenObjectInfo } from './objects.ts';
export type { ObjectSelector } from './session.ts';
export {
  type KeyAttributes,
  type KeyRef,
  type OpenTokenOptions,
  openToken,
  Token,
  TokenKey,
} from './token.ts';
