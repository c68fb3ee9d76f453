// Child process for runProgram(): reads the config on stdin, prints the run as JSON.
import * as fs from "node:fs";
import { runProgramHere } from "./program";

runProgramHere(JSON.parse(fs.readFileSync(0, "utf8")) as Record<string, unknown>, process.argv[2]).then(
    (run) => {
        // Exit only once the pipe has taken all of it: process.exit would cut a large write short.
        process.stdout.write(JSON.stringify(run), () => process.exit(0));
    },
    (e) => {
        console.error(e);
        process.exit(1);
    },
);
