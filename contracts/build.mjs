// Compiles the Solidity sources with the solc pinned in package.json and
// writes one ABI + bytecode artifact per contract next to its source.
// Imports of `@openzeppelin/...` resolve to the pinned npm package.
//
//   node contracts/build.mjs          rebuild the artifacts
//   node contracts/build.mjs --check  exit 1 if a committed artifact is stale
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

// Deployable contracts: the registry and the test dollar, plus the
// misbehaving tokens the contract tests use (contracts/test/).
const deployable = [
  ['TollstreamChannels.sol', 'TollstreamChannels'],
  ['TestStablecoin.sol', 'TestStablecoin'],
];
const testDir = join(here, 'test');
if (existsSync(testDir)) {
  for (const file of readdirSync(testDir).sort()) {
    if (file.endsWith('.sol')) deployable.push([`test/${file}`, file.slice(0, -4)]);
  }
}

const sources = {};
for (const [file] of deployable) sources[file] = { content: readFileSync(join(here, file), 'utf8') };

function findImports(path) {
  try {
    const file = path.startsWith('@') ? require.resolve(path) : join(here, path);
    return { contents: readFileSync(file, 'utf8') };
  } catch (error) {
    return { error: `cannot find ${path}: ${error.message}` };
  }
}

const settings = {
  // Many runs: a channel is opened and closed far more often than deployed.
  optimizer: { enabled: true, runs: 100000 },
  viaIR: true,
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};
const output = JSON.parse(solc.compile(JSON.stringify({ language: 'Solidity', sources, settings }), { import: findImports }));
const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

let stale = 0;
for (const [file, name] of deployable) {
  const contract = output.contracts[file][name];
  const artifact = {
    contractName: name,
    compiler: `solc ${solc.version()}`,
    settings,
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
  };
  const text = `${JSON.stringify(artifact, null, 2)}\n`;
  const artifactPath = join(here, file.replace(/\.sol$/, '.json'));
  const shown = relative(join(here, '..'), artifactPath);
  if (process.argv.includes('--check')) {
    let committed = '';
    try {
      committed = readFileSync(artifactPath, 'utf8');
    } catch {
      // A missing artifact is as stale as a wrong one.
    }
    if (committed !== text) {
      console.error(`${shown} is stale: run \`npm run build:contract\` and commit it`);
      stale += 1;
    }
  } else {
    writeFileSync(artifactPath, text);
    console.log(`wrote ${shown} (${(artifact.deployedBytecode.length - 2) / 2} bytes deployed)`);
  }
}
if (stale > 0) process.exit(1);
if (process.argv.includes('--check')) console.log(`${deployable.length} artifacts match their sources`);
