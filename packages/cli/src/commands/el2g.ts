import type { Command } from 'commander';
import { registerEl2gCerts } from './el2g-certs.ts';
import { registerEl2gConfigAwsIot } from './el2g-config-aws-iot.ts';
import { registerEl2gConfigDeviceGateway } from './el2g-config-device-gateway.ts';
import { planStatusSection, registerEl2gDevices, renewalStatusSection } from './el2g-devices.ts';
import { registerEl2gStatus } from './el2g-status.ts';

/**
 * `keyferry el2g …`: the EdgeLock 2GO-shaped commands fioctl users know. Each subcommand
 * lives in its own file and is registered here.
 */
export function registerEl2g(program: Command): Command {
  const el2g = program
    .command('el2g')
    .description('EdgeLock 2GO-compatible provisioning: status, CAs, allow-list');
  registerEl2gStatus(el2g, [renewalStatusSection, planStatusSection]);
  registerEl2gConfigDeviceGateway(el2g);
  registerEl2gConfigAwsIot(el2g);
  registerEl2gDevices(el2g);
  registerEl2gCerts(el2g);
  return el2g;
}
