// Runs the connection function against sample connection events with a stub of the
// `cloudfront` module (node's test runner; `node --test infra/tests/`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const source = readFileSync(new URL('../modules/cloudfront-mtls/revocation.js', import.meta.url), 'utf8');
assert.ok(source.length < 10 * 1024, 'connection function code must stay under 10 KB');

function load(store, { failing = false, mode = 'required' } = {}) {
  const logs = [];
  const cf = {
    kvs: () => ({
      exists: async (key) => {
        if (failing) throw new Error('store unavailable');
        return store.has(key);
      },
    }),
  };
  // The runtime provides `cloudfront` as an import; here it becomes a variable.
  // The module writes the distribution's mode the same way (replace() in main.tf).
  assert.ok(source.includes("const MTLS_MODE = 'required';"), 'the mode line the module replaces');
  const code = source
    .replace("import cf from 'cloudfront';", 'const cf = __cf;')
    .replace("const MTLS_MODE = 'required';", `const MTLS_MODE = '${mode}';`) + '\nthis.connectionHandler = connectionHandler;';
  const ctx = { __cf: cf, console: { log: (m) => logs.push(m) } };
  vm.runInNewContext(code, ctx);
  return { handler: ctx.connectionHandler, logs };
}

function connection(serial, shape = 'clientCertInfo') {
  const decisions = [];
  const c = {
    allow: () => decisions.push('allow'),
    deny: () => decisions.push('deny'),
    logCustomData: (m) => decisions.push('log: ' + m),
    decisions,
  };
  if (serial !== undefined) {
    if (shape === 'clientCertInfo') c.clientCertInfo = { serialNumber: serial };
    else c.clientCertificate = { certificates: { leaf: { serialNumber: serial } } };
  }
  return c;
}

const revoked = new Set(['00:8f:3a:01', '4b:2e:91:7c']);

test('a revoked serial is denied, and the connection log says why', async () => {
  const { handler } = load(revoked);
  const c = connection('4b:2e:91:7c');
  await handler(c);
  assert.deepEqual(c.decisions, ['log: denied: revoked certificate 4b:2e:91:7c', 'deny']);
});

test('an unknown serial is allowed', async () => {
  const { handler } = load(revoked);
  const c = connection('4b:2e:91:7d');
  await handler(c);
  assert.deepEqual(c.decisions, ['allow']);
});

test('serial forms: with and without leading 00, upper case, no colons', async () => {
  const { handler } = load(revoked);
  for (const form of ['00:8f:3a:01', '8f:3a:01', '00:8F:3A:01', '8F3A01', '008f3a01', '4B:2E:91:7C']) {
    const c = connection(form);
    await handler(c);
    assert.equal(c.decisions.at(-1), 'deny', form);
  }
});

test('the documented event shape (clientCertificate.certificates.leaf) works too', async () => {
  const { handler } = load(revoked);
  const c = connection('4b:2e:91:7c', 'leaf');
  await handler(c);
  assert.equal(c.decisions.at(-1), 'deny');
});

test('no certificate information in required mode fails closed, saying why', async () => {
  const { handler, logs } = load(revoked);
  const c = connection(undefined);
  await handler(c);
  assert.equal(c.decisions.at(-1), 'deny');
  assert.ok(c.decisions.some((d) => d.includes('no client certificate information')), c.decisions);
  assert.ok(logs.some((l) => l.includes('no client certificate information')));
});

test('no certificate in optional mode is left to the origin', async () => {
  const { handler } = load(revoked, { mode: 'optional' });
  const c = connection(undefined);
  await handler(c);
  assert.deepEqual(c.decisions, ['allow']);
});

test('an unreadable store fails closed', async () => {
  const { handler, logs } = load(revoked, { failing: true });
  const c = connection('12:34');
  await handler(c);
  assert.equal(c.decisions.at(-1), 'deny');
  assert.ok(logs.some((l) => l.includes('unavailable')));
});
