import { readFileSync } from 'node:fs';
import {
  DescribeCACertificateCommand,
  GetRegistrationCodeCommand,
  IoTClient,
  RegisterCACertificateCommand,
  type RegistrationConfig,
  UpdateCACertificateCommand,
} from '@aws-sdk/client-iot';
import { fromPem, parseCertificate } from '@keyferry/core';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { type CommandContext, commandContext } from '../context.ts';
import { printJson } from '../output.ts';

/** AWS's limit on a provisioning template body (RegisterCACertificate refuses more). */
export const MAX_JITP_TEMPLATE_CHARS = 10_240;

interface ConfigAwsIotOptions {
  jitpTemplate?: string;
  jitpRoleArn?: string;
  awsEndpoint?: string;
}

/** `keyferry el2g config-aws-iot [--jitp-template FILE --jitp-role-arn ARN] [--aws-endpoint URL]`. */
export function registerEl2gConfigAwsIot(el2g: Command): void {
  el2g
    .command('config-aws-iot')
    .description(
      'register the factory aws-iot-ca with AWS IoT Core (registration code → service → RegisterCACertificate), active with auto-registration; re-running is safe',
    )
    .option(
      '--jitp-template <file>',
      'JITP provisioning template (JSON, at most 10,240 characters) to set on the CA',
    )
    .option('--jitp-role-arn <arn>', 'IAM role AWS IoT assumes to run the JITP template')
    .option('--aws-endpoint <url>', 'AWS IoT control-plane URL (default: AWS_ENDPOINT_URL_IOT, else AWS)')
    .addHelpText(
      'after',
      '\nAWS credentials and region come from the AWS SDK standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ' +
        'AWS_PROFILE, ~/.aws/…, AWS_REGION).',
    )
    .action(async (opts: ConfigAwsIotOptions, command: Command) => {
      const registrationConfig = jitpConfig(opts);
      await configAwsIot(
        commandContext(command),
        opts.awsEndpoint ?? process.env.AWS_ENDPOINT_URL_IOT,
        registrationConfig,
      );
    });
}

function jitpConfig(opts: ConfigAwsIotOptions): RegistrationConfig | undefined {
  if ((opts.jitpTemplate === undefined) !== (opts.jitpRoleArn === undefined)) {
    throw new CliError(
      opts.jitpTemplate === undefined
        ? '--jitp-role-arn needs --jitp-template FILE (the provisioning template it runs)'
        : '--jitp-template needs --jitp-role-arn ARN (the IAM role AWS IoT assumes to run it)',
      2,
    );
  }
  if (opts.jitpTemplate === undefined || opts.jitpRoleArn === undefined) return undefined;
  let templateBody: string;
  try {
    templateBody = readFileSync(opts.jitpTemplate, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read the JITP template ${opts.jitpTemplate}: ${(err as Error).message}`);
  }
  try {
    JSON.parse(templateBody);
  } catch (err) {
    throw new CliError(`the JITP template ${opts.jitpTemplate} is not JSON: ${(err as Error).message}`);
  }
  if (templateBody.length > MAX_JITP_TEMPLATE_CHARS) {
    throw new CliError(
      `the JITP template ${opts.jitpTemplate} is ${templateBody.length} characters; AWS takes at most ${MAX_JITP_TEMPLATE_CHARS}`,
    );
  }
  if (!/^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/.test(opts.jitpRoleArn)) {
    throw new CliError(
      `--jitp-role-arn ${opts.jitpRoleArn} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)`,
      2,
    );
  }
  return { templateBody, roleArn: opts.jitpRoleArn };
}

async function configAwsIot(
  ctx: CommandContext,
  endpoint: string | undefined,
  registrationConfig: RegistrationConfig | undefined,
): Promise<void> {
  const { api, out } = ctx;
  const step = (text: string) => {
    if (!out.json) out.write(`${text}\n`);
  };
  const factoryPath = api.factoryPath('el2g/aws-iot/');
  // The SDK warns on Node 20 about its future releases; the pinned one supports Node 20.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const iot = new IoTClient(endpoint === undefined ? {} : { endpoint });
  try {
    step('Getting registration code from AWS');
    const { registrationCode } = await aws(
      iot.send(new GetRegistrationCodeCommand({})),
      'GetRegistrationCode',
    );
    if (!registrationCode) throw new CliError('AWS answered GetRegistrationCode without a registration code');
    step(` |-> ${registrationCode}`);
    // fioctl's lines, in its order, one each; what keyferry adds comes after them
    step('Configuring keyferry');
    const answer = await api.call<{ ca: string; cert: string }>('POST', factoryPath, {
      'registration-code': registrationCode,
    });
    // AWS's certificate id is the SHA-256 of the DER: known before registering, so a re-run can
    // recognise "already registered" as this very CA.
    const certificateId = parseCertificate(fromPem(answer.ca, 'CERTIFICATE')).fingerprintSha256;
    let registered = true;
    try {
      await aws(
        iot.send(
          new RegisterCACertificateCommand({
            caCertificate: answer.ca,
            verificationCertificate: answer.cert,
            setAsActive: true,
            allowAutoRegistration: true,
            ...(registrationConfig === undefined ? {} : { registrationConfig }),
          }),
        ),
        'RegisterCACertificate',
        ['ResourceAlreadyExistsException'],
      );
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
      registered = false;
    }
    await aws(
      iot.send(
        new UpdateCACertificateCommand({
          certificateId,
          newStatus: 'ACTIVE',
          newAutoRegistrationStatus: 'ENABLE',
          ...(registrationConfig === undefined ? {} : { registrationConfig }),
        }),
      ),
      'UpdateCACertificate',
    );
    const described = await aws(
      iot.send(new DescribeCACertificateCommand({ certificateId })),
      'DescribeCACertificate',
    );
    const status = described.certificateDescription?.status ?? 'UNKNOWN';
    step(` |-> AWS Certificate ID ${certificateId}`);
    step(` |-> ${status}`);
    step(
      registered
        ? 'Registered the CA with AWS IoT, auto-registration enabled'
        : 'The CA was already registered with AWS IoT: kept, set ACTIVE with auto-registration',
    );
    if (registrationConfig !== undefined) step(`JITP template set, run as ${registrationConfig.roleArn}`);
    if (out.json) {
      printJson(out, {
        registrationCode,
        certificateId,
        status,
        autoRegistrationStatus: described.certificateDescription?.autoRegistrationStatus,
        jitp: described.registrationConfig?.templateBody !== undefined,
        registered,
      });
    }
  } finally {
    iot.destroy();
  }
}

class AlreadyExists extends Error {}

/** Runs one AWS call, turning its failures into `ERROR:` lines that say what to do. */
async function aws<T>(call: Promise<T>, operation: string, tolerated: string[] = []): Promise<T> {
  try {
    return await call;
  } catch (err) {
    const name = (err as Error).name;
    const message = (err as Error).message;
    if (tolerated.includes(name)) throw new AlreadyExists(message);
    // the SDK gives network failures a $metadata too: only an HTTP status says AWS answered
    const answered =
      typeof (err as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode === 'number';
    if (name === 'CredentialsProviderError') {
      throw new CliError(
        `no AWS credentials: ${message}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ~/.aws/credentials`,
      );
    }
    if (/region is missing/i.test(message)) {
      throw new CliError('no AWS region: set AWS_REGION (or a region in the AWS profile)');
    }
    if (name === 'RegistrationCodeValidationException') {
      throw new CliError(
        `AWS refused the verification certificate: ${message}; the registration code changed meanwhile? run config-aws-iot again`,
      );
    }
    if (!answered) {
      throw new CliError(
        `cannot reach AWS IoT for ${operation}: ${message}; check --aws-endpoint / AWS_ENDPOINT_URL_IOT and the network`,
      );
    }
    throw new CliError(`AWS IoT refused ${operation}: ${name}: ${message}`);
  }
}
