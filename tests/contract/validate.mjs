// Parse and validate AsyncAPI documents with the official parser (@asyncapi/parser, its default Spectral rules).
// Usage: node validate.mjs <document.yaml>...   (one node start for several: the parser takes seconds to load)
// Prints one JSON line per document on stdout: whether it parsed, every diagnostic (severity 0 error, 1 warning,
// 2 info, 3 hint), and what the parsed document holds, so test_asyncapi.py can check the parser read what we wrote.
import { Parser, fromFile } from "@asyncapi/parser";

const parser = new Parser();
for (const path of process.argv.slice(2)) {
  const { document, diagnostics } = await fromFile(parser, path).parse();
  const summary = document === undefined ? null : {
    version: document.version(),
    channels: document.channels().all().map((c) => c.id()),
    operations: document.operations().all().map((o) => [o.id(), o.action()]),
    messages: document.components().messages().all().map((m) => m.id()),
    examples: document.components().messages().all().reduce((n, m) => n + m.examples().all().length, 0),
  };
  console.log(JSON.stringify({
    parsed: document !== undefined,
    diagnostics: diagnostics.map((d) => ({ code: d.code, severity: d.severity, message: d.message, path: d.path })),
    document: summary,
  }));
}
