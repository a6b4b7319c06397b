// Compiles contracts/TollstreamChannels.sol with the solc pinned in
// package.json and writes the ABI + bytecode artifact next to it.
//
//   node contracts/build.mjs          rebuild the artifact
//   node contracts/build.mjs --check  exit 1 if the committed artifact is stale
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';

const here = dirname(fileURLToPath(import.meta.url));
const name = 'TollstreamChannels';
const sourcePath = join(here, `${name}.sol`);
const artifactPath = join(here, `${name}.json`);

const input = {
  language: 'Solidity',
  sources: { [`${name}.sol`]: { content: readFileSync(sourcePath, 'utf8') } },
  settings: {
    // Many runs: a channel is opened and closed far more often than deployed.
    optimizer: { enabled: true, runs: 100000 },
    viaIR: true,
    evmVersion: 'cancun',
    metadata: { bytecodeHash: 'none' },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

const contract = output.contracts[`${name}.sol`][name];
const artifact = {
  contractName: name,
  compiler: `solc ${solc.version()}`,
  settings: input.settings,
  abi: contract.abi,
  bytecode: `0x${contract.evm.bytecode.object}`,
  deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
};
const text = `${JSON.stringify(artifact, null, 2)}\n`;

if (process.argv.includes('--check')) {
  let committed = '';
  try {
    committed = readFileSync(artifactPath, 'utf8');
  } catch {
    // A missing artifact is as stale as a wrong one.
  }
  if (committed !== text) {
    console.error(`${artifactPath} is stale: run \`npm run build:contract\` and commit it`);
    process.exit(1);
  }
  console.log(`${name}.json matches its source`);
} else {
  writeFileSync(artifactPath, text);
  console.log(`wrote ${artifactPath} (${(artifact.deployedBytecode.length - 2) / 2} bytes deployed)`);
}
