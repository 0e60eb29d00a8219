import type { SecureContextOptions } from 'node:tls';

/**
 * The TLS policy of every keyferryd listener (management API, device-link, device gateway):
 * TLS 1.2 only with ECDHE key exchange and AEAD ciphers (no CBC, SHA-1, RSA key exchange or
 * CCM8); TLS 1.3 with its standard suites. One object, spread into every server option and
 * secure context a listener makes; see docs/configuration.md and SECURITY.md.
 */
export const SERVER_TLS_POLICY = {
  minVersion: 'TLSv1.2',
  ciphers: [
    'TLS_AES_256_GCM_SHA384',
    'TLS_CHACHA20_POLY1305_SHA256',
    'TLS_AES_128_GCM_SHA256',
    'ECDHE-ECDSA-AES128-GCM-SHA256',
    'ECDHE-RSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305',
    'ECDHE-RSA-CHACHA20-POLY1305',
  ].join(':'),
  honorCipherOrder: true,
} as const satisfies SecureContextOptions;
