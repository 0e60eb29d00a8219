import { describe, expect, it } from 'vitest';
import { formatDeviceShow, formatRenewalSection } from '../src/devices/render.ts';

describe('renewal in el2g status and el2g devices show', () => {
  it('status: a row per CERTIFICATE object with its renewed validity and window; KEYPAIRs left out', () => {
    expect(
      formatRenewalSection([
        {
          name: 'fio-device-gateway-ca',
          type: 'CERTIFICATE',
          renewalValidityDays: 365,
          renewalWindowDays: 30,
        },
        {
          name: 'fio-device-gateway-ca-kp',
          type: 'KEYPAIR',
          renewalValidityDays: null,
          renewalWindowDays: null,
        },
        { name: 'aws-iot-ca', type: 'CERTIFICATE', renewalValidityDays: 90, renewalWindowDays: 7 },
      ]),
    ).toBe(
      '# Certificate Renewal\n' +
        '\tNAME                   RENEWED VALIDITY  RENEW FROM\n' +
        '\t----                   ----------------  ----------\n' +
        '\tfio-device-gateway-ca  365 days          30 days before expiry\n' +
        '\taws-iot-ca             90 days           7 days before expiry\n',
    );
    expect(formatRenewalSection([])).toBe('');
  });

  it('devices show: a Renewal block after the certificates, only for issued ones', () => {
    const product = { commercialName: 'SE050C2HQ1/Z01V3', nc12: '935389312472' };
    const issued = {
      secureObjectName: 'fio-device-gateway-ca',
      secureObjectType: 'CERTIFICATE',
      provisioningState: 'PROVISIONING_COMPLETED',
      certificate: '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----',
      renewal: {
        notAfter: '2027-12-02T07:00:00.000Z',
        renewFrom: '2027-11-02T07:00:00.000Z',
        renewedValidityDays: 365,
        rotationRequestedAt: null as string | null,
      },
    };
    const text = formatDeviceShow(product, [issued]);
    expect(text.slice(text.indexOf('-----END CERTIFICATE-----'))).toBe(
      '-----END CERTIFICATE-----\n' +
        'Renewal:\n' +
        '\tNAME                   EXPIRES                   RENEW FROM                RENEWED VALIDITY  ROTATION\n' +
        '\t----                   -------                   ----------                ----------------  --------\n' +
        '\tfio-device-gateway-ca  2027-12-02T07:00:00.000Z  2027-11-02T07:00:00.000Z  365 days          -\n',
    );
    const marked = {
      ...issued,
      renewal: { ...issued.renewal, rotationRequestedAt: '2027-01-05T10:00:00.000Z' },
    };
    expect(formatDeviceShow(product, [marked])).toContain(
      '  365 days          requested 2027-01-05T10:00:00.000Z\n',
    );
    const { renewal: _, ...notIssued } = { ...issued, certificate: null };
    expect(formatDeviceShow(product, [notIssued])).not.toContain('Renewal:');
  });
});
