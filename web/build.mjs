// Bundles the player page (web/src, web/index.html, web/style.css) with the
// esbuild pinned in package.json into web/dist/, which the server binary
// embeds (crates/server/src/http/player.rs). Everything the page runs is in
// the bundle: it loads nothing from any other host.
//
//   node web/build.mjs          rebuild web/dist/
//   node web/build.mjs --check  exit 1 if the committed web/dist/ is stale
//
// The output is deterministic (same sources and esbuild → same bytes), so
// the check can compare bytes.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');

const common = {
  bundle: true,
  minify: true,
  write: false,
  logLevel: 'warning',
  // Browsers with Media Source Extensions and ES2020; the bundle is one
  // classic script, so no module loading at runtime.
  target: ['chrome100', 'firefox100', 'safari15'],
  charset: 'utf8',
  legalComments: 'eof',
};

async function bundle(options) {
  const result = await esbuild.build({ ...common, ...options });
  const [file] = result.outputFiles;
  return file.text;
}

const js = await bundle({
  entryPoints: [join(here, 'src', 'main.js')],
  outfile: join(dist, 'app.js'),
  format: 'iife',
  platform: 'browser',
  define: { 'process.env.NODE_ENV': '"production"' },
});
const css = await bundle({ entryPoints: [join(here, 'style.css')], outfile: join(dist, 'app.css') });
const html = readFileSync(join(here, 'index.html'), 'utf8');

const outputs = { 'index.html': html, 'app.js': js, 'app.css': css };

if (process.argv.includes('--check')) {
  const stale = Object.entries(outputs).filter(([name, text]) => {
    try {
      return readFileSync(join(dist, name), 'utf8') !== text;
    } catch {
      // A missing file is as stale as a wrong one.
      return true;
    }
  });
  if (stale.length > 0) {
    const names = stale.map(([name]) => relative(process.cwd(), join(dist, name))).join(', ');
    console.error(`${names} ${stale.length === 1 ? 'is' : 'are'} stale: run \`npm run build:web\` and commit web/dist/`);
    process.exit(1);
  }
  console.log('web/dist matches its sources');
} else {
  mkdirSync(dist, { recursive: true });
  for (const [name, text] of Object.entries(outputs)) writeFileSync(join(dist, name), text);
  const sizes = Object.entries(outputs).map(([name, text]) => `${name} ${(Buffer.byteLength(text) / 1024).toFixed(1)} KiB`);
  console.log(`wrote ${relative(process.cwd(), dist)}/: ${sizes.join(', ')}`);
}
