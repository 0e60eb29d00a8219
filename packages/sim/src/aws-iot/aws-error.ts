/**
 * An error the emulator answers the way AWS IoT does: HTTP status, the error name in the
 * `x-amzn-ErrorType` header and `{message}` in the body, which the AWS SDK turns into an
 * exception of that name (e.g. `ResourceNotFoundException`).
 */
export class AwsError extends Error {
  readonly status: number;
  readonly extra: Readonly<Record<string, string>>;

  constructor(name: AwsErrorName, message: string, extra: Record<string, string> = {}) {
    super(message);
    this.name = name;
    this.status = AWS_ERROR_STATUS[name];
    this.extra = extra;
  }
}

/** The AWS IoT error names the emulator uses, with their HTTP status (the SDK's model). */
export const AWS_ERROR_STATUS = {
  InvalidRequestException: 400,
  CertificateValidationException: 400,
  RegistrationCodeValidationException: 400,
  ResourceNotFoundException: 404,
  CertificateStateException: 406,
  ResourceAlreadyExistsException: 409,
  MissingAuthenticationTokenException: 403,
  UnrecognizedClientException: 403,
  InvalidSignatureException: 403,
  InternalFailureException: 500,
} as const;

export type AwsErrorName = keyof typeof AWS_ERROR_STATUS;

/** The HTTP answer for an {@link AwsError}. */
export function awsErrorResponse(error: AwsError): {
  status: number;
  headers: Record<string, string>;
  body: string;
} {
  return {
    status: error.status,
    headers: { 'content-type': 'application/json', 'x-amzn-ErrorType': `${error.name}:` },
    body: JSON.stringify({ message: error.message, ...error.extra }),
  };
}
