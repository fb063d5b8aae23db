// Builds dist/liveshard.cjs — the file a mini-program copies and `require`s — from the ES
// module source, with no tools: the source imports nothing and exports only with
// `export function|class|const NAME`, so dropping the `export` keyword and appending a
// `module.exports` list is the whole conversion. The example mini-program gets the same
// file as libs/liveshard.js (a mini-program's `require` takes .js files, and cannot reach
// outside its project folder); that copy is not committed.
//
//   node build.mjs          writes both
//   node build.mjs --check  exits 1 if dist/liveshard.cjs is not what the source builds to
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const SOURCE = join(here, 'src', 'index.mjs');
export const OUTPUT = join(here, 'dist', 'liveshard.cjs');
export const MINIPROGRAM_COPY = join(here, '..', 'miniprogram', 'libs', 'liveshard.js');

/** The CommonJS text for an ES module source of the shape described above. */
export function toCommonJs(source) {
  const names = [];
  const body = source.split('\n').map((line, i) => {
    if (/^\s*import\b/.test(line) || /^export\s+(default|\{|\*)/.test(line)) {
      throw new Error(`line ${i + 1}: only "export function|class|const NAME" is supported: ${line}`);
    }
    const m = /^export\s+((?:async\s+)?function\*?|class|const|let)\s+([A-Za-z_$][\w$]*)/.exec(line);
    if (!m) return line;
    names.push(m[2]);
    return line.replace(/^export\s+/, '');
  });
  return [
    '// Generated from clients/sdk/src/index.mjs by clients/sdk/build.mjs: edit the source, then',
    '// run `node clients/sdk/build.mjs`.',
    "'use strict';",
    ...body,
    `module.exports = { ${names.join(', ')} };`,
    '',
  ].join('\n');
}

function main() {
  const out = toCommonJs(readFileSync(SOURCE, 'utf8'));
  const check = process.argv.includes('--check');
  let stale = false;
  for (const file of check ? [OUTPUT] : [OUTPUT, MINIPROGRAM_COPY]) {
    if (check) {
      let current = '';
      try {
        current = readFileSync(file, 'utf8');
      } catch {
        // missing: out of date
      }
      if (current !== out) {
        console.error(`${file} is out of date: run \`node clients/sdk/build.mjs\``);
        stale = true;
      }
    } else {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, out);
      console.log('wrote', file);
    }
  }
  if (stale) process.exit(1);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
