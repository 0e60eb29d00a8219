export { type CreatedSecureElement, createSecureElement, type SecureElementBackend } from './se05x/create.ts';
export { IDENTITY_VALIDITY, identityCertificate, randomUid } from './se05x/identity.ts';
export { objectLabel, SE_LAYOUT, SE_TOKEN } from './se05x/layout.ts';
export { loadOrCreateVendorCa, simDir, VENDOR_CA_CERT_FILE, type VendorCa } from './se05x/vendor-ca.ts';
