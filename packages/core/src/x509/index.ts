export * from './certificate.ts';
export * from './chain.ts';
export * from './crl.ts';
export * from './crl-parse.ts';
export * from './csr.ts';
export * from './csr-attributes.ts';
export * from './device-profile.ts';
export * from './device-template.ts';
export type { ExtensionsSpec, KeyUsageName } from './extensions.ts';
export * from './issue.ts';
export {
  type DistinguishedName,
  type DnAttributeName,
  type DnSpec,
  encodeName,
  type NameAttribute,
  parseName,
} from './name.ts';
export * from './native-chain.ts';
export * from './oids.ts';
export * from './pem.ts';
export * from './pkcs7.ts';
export * from './profiles.ts';
export {
  type KeyAlgorithm,
  keyAlgorithmOf,
  keyIdentifier,
  publicKeysEqual,
} from './public-key.ts';
export {
  randomSerial,
  serialFromDecimal,
  serialFromHex,
  serialToDecimal,
  serialToHex,
} from './serial.ts';
export { signatureAlgorithmName, verifySignature } from './signature.ts';
export * from './signer.ts';
export * from './validity.ts';
