/** The OpenAI-compatible server. */
export { createServer, type SafetyServer } from './server';
export { SERVER_DEFAULTS, type ServerOptions, type ResolvedServerOptions, type LogFormat } from './options';
export { ApiError } from './api-error';
