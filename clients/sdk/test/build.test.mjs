// The committed CommonJS build is what the source builds to, and exports the same API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { toCommonJs, SOURCE, OUTPUT } from '../build.mjs';
import * as esm from '../src/index.mjs';

test('dist/liveshard.cjs is up to date with src/index.mjs (run `node clients/sdk/build.mjs`)', () => {
  assert.equal(readFileSync(OUTPUT, 'utf8'), toCommonJs(readFileSync(SOURCE, 'utf8')));
});

test('the CommonJS build exports what the ES module does', () => {
  const cjs = createRequire(import.meta.url)(OUTPUT);
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(cjs.backoffDelay(2, { base: 100, max: 1000 }, () => 0), 400);
  assert.equal(typeof cjs.LiveshardClient, 'function');
});

test('the converter refuses what it cannot convert', () => {
  assert.throws(() => toCommonJs("import x from 'y';\n"), /only/);
  assert.throws(() => toCommonJs('export default 1;\n'), /only/);
  assert.throws(() => toCommonJs('export { a };\n'), /only/);
});
