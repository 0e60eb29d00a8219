import { describe, expect, it } from 'vitest';
import { plainHttpWarning } from '../src/api-client.ts';

/** The token in clear to another machine is said once on stderr; loopback and HTTPS are quiet. */
describe('plainHttpWarning', () => {
  it.each([
    'http://127.0.0.1:8080',
    'http://127.1.2.3:8080',
    'http://localhost:8080',
    'http://LOCALHOST:8080',
    'http://[::1]:8080',
    'http://[0:0:0:0:0:0:0:1]:8080',
    'http://[::ffff:127.0.0.1]:8080',
    'https://keyferry.example.com',
    'https://10.0.0.5:8443',
  ])('says nothing for %s', (url) => {
    expect(plainHttpWarning(new URL(url))).toBeUndefined();
  });

  it.each([
    ['http://keyferry.example.com:8080', 'http://keyferry.example.com:8080'],
    ['http://10.0.0.5:8080/', 'http://10.0.0.5:8080'],
    ['http://[fd00::5]:8080', 'http://[fd00::5]:8080'],
    ['http://128.0.0.1', 'http://128.0.0.1'],
    ['http://[::ffff:10.0.0.5]:8080', 'http://[::ffff:a00:5]:8080'],
    ['http://[::2]:8080', 'http://[::2]:8080'],
  ])('warns for %s, naming the risk and https://', (url, origin) => {
    expect(plainHttpWarning(new URL(url))).toBe(
      `WARNING: ${origin} is plain HTTP to another machine: the API token crosses the network unencrypted, readable by anyone on the way; use an https:// --server (keyferryd's api.tls)\n`,
    );
  });
});
