import { describe, expect, it } from 'vitest';
import { parseEnvFile } from '../src/settings/env-file.ts';

/*
 * The env file is the one the unit hands systemd (`EnvironmentFile=-/etc/default/
 * lmp-el2go-auto-register`), so the agent must read it as systemd does. These cases were meant
 * to be checked against `systemd-run --property=EnvironmentFile=… env`, but systemd-run needs
 * systemd as PID 1 (or a user manager), and neither runs on this test machine
 * ("System has not been booted with systemd as init system"; `systemd --user` exits at once).
 * So each expected value follows systemd's documented grammar — systemd.exec(5),
 * "EnvironmentFile=" — and its reading of the file (src/basic/env-file.c, systemd 254+, and
 * the removal of invalid names before the exec), quoted beside each case.
 */
const CASES: readonly (readonly [rule: string, file: string, expected: Record<string, string>])[] = [
  ['newline-separated assignments', 'A=1\nB=2\n', { A: '1', B: '2' }],
  ['the last line needs no newline', 'A=1\nB=2', { A: '1', B: '2' }],
  ['empty lines are ignored', '\n\nA=1\n\n', { A: '1' }],
  ['lines starting with "#" are ignored', '# A=1\nB=2\n', { B: '2' }],
  ['lines starting with ";" are ignored', '; A=1\nB=2\n', { B: '2' }],
  ['a comment may follow leading blanks', '   # A=1\n\t; B=2\nC=3\n', { C: '3' }],
  ['lines without an "=" separator are ignored', 'just words\nA=1\n', { A: '1' }],
  ['there are no inline comments: "#" in a value is kept', 'A=x # y\n', { A: 'x # y' }],
  ['";" in a value is kept', 'A=x;y ; z\n', { A: 'x;y ; z' }],
  ['leading and trailing whitespace of the value is discarded', 'A=   x y  \t\n', { A: 'x y' }],
  ['interior whitespace is preserved verbatim', 'A=x    y\n', { A: 'x    y' }],
  ['blanks around the name are discarded', '  A  =1\n', { A: '1' }],
  ['an empty value is an assignment of ""', 'A=\n', { A: '' }],
  ['"=" inside the value is kept', 'A=b=c\n', { A: 'b=c' }],
  ['a line ending with a backslash continues on the next', 'A=x\\\ny\n', { A: 'xy' }],
  ['blanks after a continuation are interior', 'A=x \\\n   y\n', { A: 'x    y' }],
  ['a backslash keeps the next character (unquoted)', 'A=x\\\\y\\"z\\#\n', { A: 'x\\y"z#' }],
  ['a backslash keeps a trailing blank (unquoted)', 'A=x\\ \n', { A: 'x ' }],
  ['quotes after the first non-blank character are kept', 'A=x "y" \'z\'\n', { A: 'x "y" \'z\'' }],
  ['single quotes keep everything verbatim', 'A=\'x  # \\n "y"\'\n', { A: 'x  # \\n "y"' }],
  ['single quotes may span lines', "A='x\ny'\nB=1\n", { A: 'x\ny', B: '1' }],
  ['double quotes keep blanks and "#"', 'A="  x # y  "\n', { A: '  x # y  ' }],
  ['in double quotes \\ \\" \\$ \\` are escapes', 'A="a\\\\b\\"c\\$d\\`e"\n', { A: 'a\\b"c$d`e' }],
  ['in double quotes other backslashes are kept', 'A="a\\nb\\x"\n', { A: 'a\\nb\\x' }],
  ['in double quotes a backslash-newline is removed', 'A="a\\\nb"\n', { A: 'ab' }],
  ['double quotes may span lines', 'A="x\ny"\n', { A: 'x\ny' }],
  ['blanks outside the quotes are discarded', 'A=  "x"  \n', { A: 'x' }],
  ['pieces directly after a quote join it', 'A="x"y\nB=\'p\'"q"\n', { A: 'xy', B: 'pq' }],
  ['the later assignment of a name wins', 'A=1\nA=2\n', { A: '2' }],
  ['a name that is not valid is dropped (export X=1)', 'export A=1\nB=2\n', { B: '2' }],
  ['a name may not start with a digit', '1A=x\n_B1=y\n', { _B1: 'y' }],
  ['CR LF line ends', 'A=1\r\nB=x y \r\n', { A: '1', B: 'x y' }],
  ['a CR inside quotes is kept', 'A="x\ry"\n', { A: 'x\ry' }],
  ['an unterminated quote runs to the end of the file', 'A="x\nB=2\n', { A: 'x\nB=2\n' }],
  ['a backslash at the end of a comment does not continue it (systemd 254+)', '# note \\\nA=1\n', { A: '1' }],
  [
    'LmP-style file',
    [
      '# /etc/default/lmp-el2go-auto-register',
      'REPOID=abcdef1234',
      'GENERIC_KEYPAIRS=0X83000044,0X83000046',
      'PKCS11_PIN="87654321"',
      "PACMAN_TYPE='ostree'",
      'DAEMON_INTERVAL=300 ',
      '',
    ].join('\n'),
    {
      REPOID: 'abcdef1234',
      GENERIC_KEYPAIRS: '0X83000044,0X83000046',
      PKCS11_PIN: '87654321',
      PACMAN_TYPE: 'ostree',
      DAEMON_INTERVAL: '300',
    },
  ],
];

describe('the env file, read as systemd reads EnvironmentFile=', () => {
  it.each(CASES)('%s', (_rule, file, expected) => {
    expect(Object.fromEntries(parseEnvFile(file))).toEqual(expected);
  });
});
