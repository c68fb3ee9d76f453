// npm run lab [-- --json] [-- --keep] [-- --down] [-- --only=gateway|site|split|twoclouds|laptop]
// Builds the namespace world, applies the lab stack with the real program, prints the
// isolation and leak matrix, then destroys everything and proves nothing is left. Each phase
// (world, scenario, teardown) says on stderr when it starts and how long it took.
import { formatMatrix, gatewayScenario, Lab } from "./lab";
import { laptopScenario } from "./laptopScenario";
import { phase } from "./progress";
import { siteScenario } from "./siteScenario";
import { splitScenario } from "./splitScenario";
import { twoCloudsLaptopScenario } from "./twoCloudsLaptopScenario";
import { twoCloudsScenario } from "./twoCloudsScenario";
import { LabWorld } from "./world";

const SCENARIOS = ["gateway", "site", "split", "twoclouds", "laptop"];

export function labUnsupportedReason(): string | undefined {
    if (process.platform !== "linux") return `the lab needs Linux network namespaces (this is ${process.platform})`;
    if (typeof process.getuid === "function" && process.getuid() !== 0) return "the lab needs root (run: sudo npm run lab)";
    return undefined;
}

async function down(): Promise<number> {
    let problems = 0;
    for (const manifest of LabWorld.findLeftovers()) {
        const left = await phase(`removing the lab world ${manifest}`, () => LabWorld.load(manifest).destroy());
        for (const p of left) console.error(`  ${p}`);
        problems += left.length;
        console.log(`removed lab world ${manifest}`);
    }
    return problems ? 1 : 0;
}

async function main(): Promise<number> {
    const args = new Set(process.argv.slice(2));
    const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length);
    if (only !== undefined && !SCENARIOS.includes(only)) {
        console.error(`--only=${only}: unknown scenario; use one of ${SCENARIOS.join(", ")}`);
        return 2;
    }
    const reason = labUnsupportedReason();
    if (reason) {
        console.error(`LAB SKIPPED: ${reason}`);
        return 2;
    }
    if (args.has("--down")) return down();
    const json = args.has("--json");
    const lab = await phase("building the lab world (network namespaces as internet, cloud, home, hosts)", () => Lab.start());
    let interrupted = false;
    const onSignal = () => {
        interrupted = true;
        console.error("interrupted: tearing the lab down");
        lab.destroy().finally(() => process.exit(130));
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    try {
        if (only === undefined || only === "gateway") {
            await phase("scenario gateway/existing: the gateway on an existing host", () => gatewayScenario(lab, "existing"));
            await phase("scenario gateway/oci: the gateway on Oracle Cloud (mocked API, real cloud-init)", () => gatewayScenario(lab, "oci"));
        }
        if (only === undefined || only === "site") await phase("scenario site/kvm: a KVM site with a QEMU guest", () => siteScenario(lab));
        if (only === undefined || only === "split") await phase("scenario stacks/split: a gateway stack and a site stack", () => splitScenario(lab));
        if (only === undefined || only === "twoclouds") await phase("scenario gateways/two-clouds: two gateways, failover without leaks", () => twoCloudsScenario(lab));
        if (only === undefined || only === "laptop") await phase("scenario laptop/linux: a laptop through its local VM", () => laptopScenario(lab));
        if (only === undefined || only === "twoclouds" || only === "laptop") await phase("scenario gateways/two-clouds-laptop: a laptop's VM on two gateways", () => twoCloudsLaptopScenario(lab));
    } catch (e) {
        lab.record("lab", "scenarios ran to the end", false, (e as Error).message);
        console.error((e as Error).message);
        console.error(await lab.world.debugDump());
    }
    if (interrupted) return 130;
    if (args.has("--keep")) {
        console.log(formatMatrix(lab.checks));
        console.log(`\nThe world is kept. Shells:\n${Object.entries(lab.world.m.namespaces).map(([r, ns]) => `  ${r.padEnd(6)} sudo ip netns exec ${ns} bash`).join("\n")}`);
        console.log(`\nTo apply with a real Pulumi CLI from the operator's machine (the lab's engine already did):`);
        console.log(`  sudo ip netns exec ${lab.world.ns("ctl")} bash`);
        console.log(`  pulumi stack select lab   # or: pulumi stack init lab`);
        console.log(`  pulumi config set --secret sshPrivateKey < ${lab.world.sshKeyFile}`);
        console.log(`  pulumi config set --path 'peers[0].publicKey' ${lab.peerPublicKey}`);
        const files = lab.guestFiles;
        if (files) {
            for (const [field, value] of [["image", files.imageUrl], ["imageSha256", files.imageSha256], ["kernel", files.kernel], ["initrd", files.initrd]]) {
                console.log(`  pulumi config set --path 'sites[0].networks[0].guests[0].${field}' ${value}`);
            }
        }
        console.log(`  pulumi up -s lab`);
        console.log(`Remove it with: sudo npm run lab -- --down`);
        return lab.checks.some((c) => !c.pass) ? 1 : 0;
    }
    const left = await phase("teardown (and the check that nothing is left)", () => lab.destroy());
    lab.record("lab", "teardown leaves no namespace, link, process or file", left.length === 0, left.join("; ") || "clean");
    const failed = lab.checks.filter((c) => !c.pass).length;
    console.log(json ? JSON.stringify({ checks: lab.checks, passed: lab.checks.length - failed, failed }, null, 2) : formatMatrix(lab.checks));
    return failed ? 1 : 0;
}

if (require.main === module) {
    main().then(
        (code) => process.exit(code),
        (e) => {
            console.error(e);
            process.exit(1);
        },
    );
}
