// Child process for runProgram(): reads the config on stdin, prints the run as JSON.
import * as fs from "node:fs";
import { runProgramHere } from "./program";

const { config, stacks, asCli } = JSON.parse(fs.readFileSync(0, "utf8")) as { config: Record<string, unknown>; stacks: Record<string, Record<string, unknown>>; asCli: boolean };
runProgramHere(config, process.argv[2], stacks, { asCli }).then(
    (run) => {
        // Exit only once the pipe has taken all of it: process.exit would cut a large write short.
        process.stdout.write(JSON.stringify(run), () => process.exit(0));
    },
    (e) => {
        console.error(e);
        process.exit(1);
    },
);
