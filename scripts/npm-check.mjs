// Exits 0 when every package in DIR/package-lock.json is installed under DIR/node_modules at
// the locked version, 1 otherwise (then `npm ci --prefix DIR` is due). Used by test.sh and
// run.sh so that a node_modules from before a package was added is brought up to date.
//
//   node scripts/npm-check.mjs clients
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2] || '.';
let lock;
try {
  lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8'));
} catch {
  process.exit(1);
}
for (const [path, meta] of Object.entries(lock.packages || {})) {
  if (!path.startsWith('node_modules/') || meta.optional) continue;
  try {
    const installed = JSON.parse(readFileSync(join(dir, path, 'package.json'), 'utf8'));
    if (installed.version !== meta.version) process.exit(1);
  } catch {
    process.exit(1);
  }
}
process.exit(0);
