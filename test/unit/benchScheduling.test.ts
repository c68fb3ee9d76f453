// The benchmark compares tunnels only when their wireguard-go processes are scheduled alike:
// each in a session of its own, since the kernel's autogroups share CPU between sessions, not
// processes. This pins the check the benchmark makes after bringing each setup up.
import * as assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import { autogroupsOn, sharedSchedulingGroups } from "../../bench/dataplane";

async function started(child: ChildProcess): Promise<number> {
    const pid = child.pid ?? 0;
    for (let i = 0; i < 100; i++) {
        if (fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("wireguard-go")) return pid;
        await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`pid ${pid} did not exec`);
}

describe("benchmark scheduling", { skip: autogroupsOn() ? false : "kernel autogroups are off on this machine: every process is scheduled alike" }, () => {
    it("names a wireguard-go in the benchmark's own session, and not one started in a session of its own", async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-sched-"));
        const fake = path.join(dir, "wireguard-go");
        fs.symlinkSync("/bin/sleep", fake);
        const same = spawn(fake, ["30"], { stdio: "ignore" });
        const own = spawn("setsid", [fake, "30"], { stdio: "ignore" });
        try {
            const [samePid, ownPid] = [await started(same), await started(own)];
            const shared = sharedSchedulingGroups().join("\n");
            assert.match(shared, new RegExp(`\\(pid ${samePid}\\)`));
            assert.doesNotMatch(shared, new RegExp(`\\(pid ${ownPid}\\)`));
        } finally {
            same.kill();
            own.kill();
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });
});
