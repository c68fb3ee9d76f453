// Minimal file snapshots: test/__snapshots__/<name>. Set UPDATE_SNAPSHOTS=1 to rewrite them.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

const DIR = path.join(__dirname, "..", "__snapshots__");

export function matchSnapshot(name: string, actual: string): void {
    const file = path.join(DIR, name);
    if (process.env.UPDATE_SNAPSHOTS === "1" || !fs.existsSync(file)) {
        if (process.env.CI && !fs.existsSync(file)) assert.fail(`snapshot ${name} is missing; run UPDATE_SNAPSHOTS=1 npm test and commit it`);
        fs.mkdirSync(DIR, { recursive: true });
        fs.writeFileSync(file, actual);
        return;
    }
    assert.equal(actual, fs.readFileSync(file, "utf8"), `snapshot ${name} differs; if the change is intended run UPDATE_SNAPSHOTS=1 npm test`);
}
