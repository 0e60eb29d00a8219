/**
 * What `aws-demo --help` shows, apart from aws-demo.ts: that module loads mqtt and the X.509
 * code, which `--help` must not wait for (the agent's start-up budget, docs/architecture.md).
 */
export const AWS_DEMO_TOPIC = 'se050/demo';
/** AWS IoT's MQTT over TLS port. */
export const AWS_MQTT_PORT = 8883;
/** What the awsiot-optee container did: 5 s before the one retry. */
export const DEFAULT_RETRY_DELAY_SECONDS = 5;
/** How long one connection may take to be accepted (TLS handshake and CONNACK), as the container's client waited. */
export const DEFAULT_CONNECT_TIMEOUT_SECONDS = 30;
