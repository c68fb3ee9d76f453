// Apply time against the number of guests added together: the lab engine runs independent
// steps at once, as `pulumi up` does, so 8 new guests of one image should take little longer
// than 1 (they share one download of the base image and start side by side).
import * as fs from "node:fs";
import { buildGuestBootFiles, guestKernelMissingReason } from "../lab/guests";
import type { Lab } from "../lab/lab";
import { phase } from "../lab/progress";

export interface ApplyTime {
    guests: number;
    applyMs: number;
    peakParallel: number;
    /** The shortest and longest guest step. */
    guestStepMs: [number, number];
    /** CPU the guests' QEMU processes had used when the apply ended (they boot as it runs). */
    guestCpuMs: number;
    destroyMs: number;
}

/** CPU time of every QEMU process now running, in ms (only the lab's guests run QEMU here). */
function qemuCpuMs(): number {
    let ticks = 0;
    for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
        try {
            const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
            if (!stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")).startsWith("qemu-system")) continue;
            const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
            ticks += Number(fields[11]) + Number(fields[12]);
        } catch {
            // The process ended while we looked.
        }
    }
    return ticks * 10;
}

/** A site from empty with `n` QEMU guests of the lab's image, applied and destroyed. */
export async function applyTimes(lab: Lab, counts: number[]): Promise<ApplyTime[] | { skipped: string }> {
    const missing = guestKernelMissingReason();
    if (missing) return { skipped: missing };
    lab.guestFiles ??= await buildGuestBootFiles(lab.world);
    const results: ApplyTime[] = [];
    for (const n of counts) {
        const sites = (lab.baseOverrides().sites as { networks: { guests: Record<string, unknown>[] }[] }[]).map((site) => ({
            ...site,
            networks: site.networks.map((net, i) => ({
                ...net,
                guests: i === 0 ? Array.from({ length: n }, (_, g) => ({ ...net.guests[0], name: `bench${g + 1}`, memoryMb: 96 })) : [],
            })),
        }));
        await phase(`apply time: a site with ${n} new guest${n > 1 ? "s" : ""}`, async () => {
            const applied = await lab.apply({ sites });
            const guestCpuMs = qemuCpuMs();
            const guestSteps = applied.executions.filter((e) => /-guest-.*-domain$/.test(e.key)).map((e) => e.ms);
            const destroyed = await lab.apply({ sites }, true);
            results.push({ guests: n, applyMs: applied.wallMs, peakParallel: applied.peakParallel, guestStepMs: [Math.min(...guestSteps), Math.max(...guestSteps)], guestCpuMs, destroyMs: destroyed.wallMs });
        }, "bench");
    }
    return results;
}
