// Validates AsyncAPI documents with the official parser (@asyncapi/parser), as tools that read them do.
//
//   node validate.mjs docs/asyncapi.yaml [more.yaml ...]
//
// Prints one JSON line per document: {"file", "asyncapi", "diagnostics": [{severity, code, message, path}]}.
// Exits 1 when any diagnostic is an error or a warning (hints and information are printed, not fatal),
// 2 when a file cannot be read. Run by tests/contract/test_asyncapi.py.
import { readFile } from 'node:fs/promises';

import parserPackage from '@asyncapi/parser';

const { Parser, DiagnosticSeverity } = parserPackage;
const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'information',
  [DiagnosticSeverity.Hint]: 'hint',
};
const FATAL = new Set(['error', 'warning']);

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.mjs <asyncapi.yaml> [...]');
  process.exit(2);
}

const parser = new Parser();
let failed = false;
for (const file of files) {
  let source;
  try {
    source = await readFile(file, 'utf8');
  } catch (error) {
    console.error(`cannot read ${file}: ${error.message}`);
    process.exit(2);
  }
  const { document, diagnostics } = await parser.parse(source, { source: file });
  const found = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.join('/'),
  }));
  if (document === undefined || found.some((d) => FATAL.has(d.severity))) {
    failed = true;
  }
  console.log(JSON.stringify({ file, asyncapi: document?.version() ?? null, diagnostics: found }));
}
process.exit(failed ? 1 : 0);
