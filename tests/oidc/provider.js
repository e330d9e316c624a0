// A real OpenID Connect provider for Kaiketsu's SSO tests: the certified `oidc-provider`,
// with a small login page that checks each test account's password and grants consent at once.
//
//   node provider.js CONFIG.json
//
// CONFIG: {"port": N, "client": {"client_id", "client_secret", "redirect_uri"},
//          "accounts": {"login": {"password": "...", "claims": {...}}}}
// Prints one JSON line {"issuer": ...} once it listens.
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const issuer = `http://127.0.0.1:${config.port}`;
const accounts = config.accounts;

const signingKey = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.client.client_id,
      client_secret: config.client.client_secret,
      redirect_uris: [config.client.redirect_uri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  claims: {
    openid: ["sub"],
    profile: ["preferred_username", "name"],
    email: ["email"],
    groups: ["groups"],
  },
  scopes: ["openid", "profile", "email", "groups"],
  jwks: { keys: [{ ...signingKey, kid: "test-key", use: "sig", alg: "RS256" }] },
  cookies: { keys: [randomBytes(32).toString("hex")] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    if (!accounts[id]) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...accounts[id].claims }) };
  },
});

function page(res, status, message) {
  res.writeHead(status, { "content-type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><title>Company sign-in</title><h1>Company sign-in</h1>
<p id="message">${message}</p>
<form method="post"><label>User <input name="username" autofocus></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button></form>`);
}

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

async function consent(req, res, details) {
  const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(" "));
  if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === "consent") return consent(req, res, details);
  if (req.method !== "POST") return page(res, 200, "Sign in with your company account.");
  const form = await body(req);
  const login = form.get("username") || "";
  if (!accounts[login] || accounts[login].password !== form.get("password")) {
    return page(res, 401, "Wrong user name or password.");
  }
  await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (!req.url.startsWith("/interaction/")) return callback(req, res);
  interaction(req, res).catch((error) => {
    res.writeHead(400, { "content-type": "text/plain" });
    res.end(String(error));
  });
});
server.listen(config.port, "127.0.0.1", () => console.log(JSON.stringify({ issuer })));
