// Progress for long runs (the lab, the benchmark): each phase says on stderr when it starts
// and how long it took, so a user sees the run is not hung. stdout stays the results' alone.

/** Runs one phase of `work`, printing "[tag] name …" and then "[tag] name done in 12.3 s". */
export async function phase<T>(name: string, work: () => Promise<T>, tag = "lab"): Promise<T> {
    const start = process.hrtime.bigint();
    const seconds = () => (Number(process.hrtime.bigint() - start) / 1e9).toFixed(1);
    console.error(`[${tag}] ${name} …`);
    try {
        const result = await work();
        console.error(`[${tag}] ${name} done in ${seconds()} s`);
        return result;
    } catch (e) {
        console.error(`[${tag}] ${name} failed after ${seconds()} s`);
        throw e;
    }
}
