// Builds dist/liveshard.cjs — the file a mini-program copies and `require`s — from the ES
// module source, with no tools: the source imports nothing and exports only with
// `export function|class|const NAME`, so dropping the `export` keyword and appending a
// `module.exports` list is the whole conversion.
//
//   node build.mjs          writes dist/liveshard.cjs
//   node build.mjs --check  exits 1 if dist/liveshard.cjs is not what the source builds to
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const SOURCE = join(here, 'src', 'index.mjs');
export const OUTPUT = join(here, 'dist', 'liveshard.cjs');

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
    '// Generated from src/index.mjs by build.mjs: edit the source, then run `node build.mjs`.',
    "'use strict';",
    ...body,
    `module.exports = { ${names.join(', ')} };`,
    '',
  ].join('\n');
}

function main() {
  const out = toCommonJs(readFileSync(SOURCE, 'utf8'));
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(OUTPUT, 'utf8');
    } catch {
      // missing: reported below as out of date
    }
    if (current !== out) {
      console.error('dist/liveshard.cjs is out of date: run `node clients/sdk/build.mjs`');
      process.exit(1);
    }
    return;
  }
  mkdirSync(dirname(OUTPUT), { recursive: true });
  writeFileSync(OUTPUT, out);
  console.log('wrote', OUTPUT);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
