// Failover with two gateways: the lab's two-cloud stack (lab/twoCloudsScenario.ts) running, the
// first cloud cut off and brought back, round after round. Failover: from the cut to the
// guest's first answer from the second gateway's address; failback: from the first cloud's
// return to the guest's first answer from it again (it includes the configured hold).

import type { Lab } from "../lab/lab";
import { FAILOVER, startTwoClouds } from "../lab/twoCloudsScenario";
import { LAB } from "../lab/world";

export interface FailoverTimes {
    settings: typeof FAILOVER;
    /** Seconds, one per round (NaN: no answer within 40 s). */
    failover: number[];
    failback: number[];
}

export async function failoverTimes(lab: Lab, rounds: number): Promise<FailoverTimes> {
    const tc = await startTwoClouds(lab);
    const times: FailoverTimes = { settings: FAILOVER, failover: [], failback: [] };
    try {
        for (let i = 0; i < rounds; i++) {
            const cut = Date.now() / 1000;
            await tc.cut("vcn", true);
            times.failover.push(Number((await tc.firstAnswer(cut, LAB.cloud2.v4, 40_000)).toFixed(2)));
            const back = Date.now() / 1000;
            await tc.cut("vcn", false);
            times.failback.push(Number((await tc.firstAnswer(back, LAB.cloudPublic.v4, 40_000 + FAILOVER.failbackAfterSeconds * 1000)).toFixed(2)));
        }
    } finally {
        await tc.stopGuest();
        await tc.cut("vcn", false);
        await tc.stopWatch();
        await lab.apply(tc.config, true);
    }
    return times;
}
