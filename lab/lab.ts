// The lab: a world, a stack applied to it by the lab engine, and the checks that show
// packets going, or not going, where they should.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import type { ApplyJob, ApplyResult } from "./apply";
import { EXIT_FAILED, type StackOutputsRead } from "./engine";
import { inNs, type RunResult, run, waitFor } from "./exec";
import type { GuestBootFiles } from "./guests";
import { SECRET_KEYS } from "../components/config";
import { cliConfig, readProject } from "./pulumiCli";
import { LAB, LabWorld, PYTHON } from "./world";

export interface Check {
    group: string;
    name: string;
    pass: boolean;
    detail: string;
}

export type Overrides = Record<string, unknown>;

interface SiteInput {
    networks: { guests?: Record<string, unknown>[] }[];
}

/** The stack outputs the lab reads (index.ts exports them). */
export interface StackOutputs {
    gatewayPublicKey: string;
    gatewayEndpoint: string;
    peerAddresses: Record<string, { addressV4: string; addressV6: string }>;
    sitePublicKeys: Record<string, string>;
    siteGuests: Record<string, Record<string, string>>;
    laptopPublicKeys: Record<string, string>;
    clientConfigs: Record<string, string>;
}

const REPO = path.join(__dirname, "..");

/** The committed lab stack's config ("wgexit:key" → value). */
export function labStackFile(): Record<string, unknown> {
    return (parseYaml(fs.readFileSync(path.join(REPO, "Pulumi.lab.yaml"), "utf8")) as { config: Record<string, unknown> }).config;
}

/** Overrides keyed as a stack file keys them ("wgexit:key"). */
function prefixed(overrides: Overrides): Record<string, unknown> {
    return Object.fromEntries(Object.entries(overrides).map(([k, v]) => [`wgexit:${k}`, v]));
}

export interface ApplyStack {
    /** Another stack than "lab" (split layout), with its own state. */
    name?: string;
    /** Its config instead of Pulumi.lab.yaml's. */
    config?: Overrides;
    /** The outputs of the stacks it may reference, by stack name. */
    stackRefs?: Record<string, StackOutputsRead>;
    allowFailure?: boolean;
    /** The clouds have published newer images since the last run. */
    newerImages?: boolean;
}

/** The other stacks' view of an applied stack (what a StackReference reads). */
export function stackRef(r: ApplyResult): StackOutputsRead {
    return { outputs: r.outputs, secretOutputNames: r.secretOutputs };
}

/**
 * Where an update did something its preview did not announce, or registered other resources.
 * A preview may announce more (an unknown input may turn out unchanged), and a planned replace
 * may turn out an update.
 */
export function previewMismatches(preview: ApplyResult, update: ApplyResult): string[] {
    const problems: string[] = [];
    const a = [...preview.registered].sort().join("\n");
    const b = [...update.registered].sort().join("\n");
    if (a !== b) problems.push(`registered in preview only: ${preview.registered.filter((k) => !update.registered.includes(k)).join(", ") || "-"}; in the update only: ${update.registered.filter((k) => !preview.registered.includes(k)).join(", ") || "-"}`);
    const allowed: Record<string, string[]> = { create: ["create"], update: ["update", "replace"], replace: ["replace"], delete: ["delete"] };
    for (const e of update.executions) {
        const planned = preview.plan[e.key];
        if (!planned || !allowed[e.action].includes(planned)) problems.push(`${e.action} ${e.key}: the preview announced ${planned ?? "nothing"}`);
    }
    return problems;
}

export class Lab {
    readonly checks: Check[] = [];
    private applyCount = 0;
    peerPrivateKey = "";
    peerPublicKey = "";
    /** The QEMU guest's boot files, built on first use of the site. */
    guestFiles?: GuestBootFiles;

    constructor(readonly world: LabWorld) {}

    static async start(): Promise<Lab> {
        const lab = new Lab(await LabWorld.create());
        const priv = await run(["wg", "genkey"]);
        lab.peerPrivateKey = priv.stdout.trim();
        lab.peerPublicKey = (await run(["wg", "pubkey"], { input: priv.stdout })).stdout.trim();
        return lab;
    }

    get stateFile(): string {
        return path.join(this.world.root, "state.json");
    }

    /**
     * The config overrides every lab stack needs: this run's keys and guest boot files. The
     * laptop is applied only by its own scenario (it reroutes a whole host).
     */
    baseOverrides(file = labStackFile()): Overrides {
        const peers = (file["wgexit:peers"] as Record<string, unknown>[]).map((p) => (p.name === "labpeer" ? { ...p, publicKey: this.peerPublicKey } : p));
        const files = this.guestFiles;
        const sites = (file["wgexit:sites"] as SiteInput[]).map((site) => ({
            ...site,
            // The base image comes from the lab internet by URL, like a cloud image would.
            networks: site.networks.map((n) => ({ ...n, guests: (n.guests ?? []).map((g) => (files ? { ...g, kernel: files.kernel, initrd: files.initrd, image: files.imageUrl, imageSha256: files.imageSha256 } : g)) })),
        }));
        return { sshPrivateKey: fs.readFileSync(this.world.sshKeyFile, "utf8"), peers, sites, laptops: [] };
    }

    ociOverrides(): Overrides {
        return {
            placement: "oci",
            oci: { compartmentId: "ocid1.compartment.oc1..labcompartment" },
            sshPublicKey: fs.readFileSync(`${this.world.sshKeyFile}.pub`, "utf8").trim(),
            sshUser: "root",
        };
    }

    /** The stack file a user would have for this config (the status command reads one); `stack.config` as apply takes it. */
    writeStackFile(overrides: Overrides, name: string, stack: Pick<ApplyStack, "config"> = {}): string {
        const file = path.join(this.world.root, name);
        fs.writeFileSync(file, stringifyYaml({ config: this.stackValues(overrides, stack) }), { mode: 0o600 });
        return file;
    }

    /** A stack's config as its stack file keys it: Pulumi.lab.yaml's with the overrides, or another stack's own. */
    private stackValues(overrides: Overrides, stack: Pick<ApplyStack, "config">): Record<string, unknown> {
        return stack.config ? prefixed(stack.config) : { ...labStackFile(), ...prefixed({ ...this.baseOverrides(), ...overrides }) };
    }

    /** `npm run status` from the operator's machine, with the lab's key. */
    async status(stackFile: string): Promise<RunResult> {
        return inNs(this.world.ns("ctl"), `${process.execPath} --import tsx ops/status.ts --config ${stackFile} --identity ${this.world.sshKeyFile} --known-hosts ${path.join(this.world.root, "known_hosts")}`, {
            allowFail: true,
            timeoutMs: 120_000,
            cwd: REPO,
        });
    }

    /**
     * One `pulumi up` (or destroy) of the lab stack, as the CLI runs it: the config the CLI would
     * hand the program (lab/pulumiCli.ts), a preview pass, then the update, each in a fresh
     * process. The preview must succeed, register the same resources, and announce every step
     * the update then takes; a failed preview stops there, as `pulumi up` does. `stack` runs
     * another stack instead (split layout): its own state, its own config (not
     * Pulumi.lab.yaml), and the outputs of the stacks it may reference. A failure throws unless
     * allowFailure. `newerImages`: the clouds have published new images since the last run.
     */
    async apply(overrides: Overrides, destroy = false, stack: ApplyStack = {}): Promise<ApplyResult> {
        const name = stack.name ?? "lab";
        const values = this.stackValues(overrides, stack);
        const secure = SECRET_KEYS.map((k) => `wgexit:${k}`).filter((k) => k in values);
        const { config, secretKeys } = cliConfig(readProject(), name, values, secure);
        const job = {
            stack: name,
            config,
            secretKeys,
            stateFile: stack.name ? path.join(this.world.root, `state-${stack.name}.json`) : this.stateFile,
            stackRefs: stack.stackRefs ?? {},
            destroy,
            newerImages: stack.newerImages ?? false,
            ctlNamespace: this.world.ns("ctl"),
            workDir: this.world.root,
            cloudBox: { host: LAB.cloudPublic.v4, keyFile: this.world.sshKeyFile },
            cloudAddresses: LAB.cloudPublic,
        };
        const fail = (what: string, r: ApplyResult, log: string) => {
            if (stack.allowFailure) return r;
            throw new Error(`lab ${what} failed:\n${r.failures.join("\n")}\n${fs.readFileSync(log, "utf8").slice(-2000)}`);
        };
        if (!destroy) {
            const { result: preview, log } = await this.runJob({ ...job, preview: true });
            if (preview.failures.length) return fail("preview", preview, log);
            const { result, log: applyLog } = await this.runJob({ ...job, preview: false });
            if (result.failures.length) return fail("apply", result, applyLog);
            const problems = previewMismatches(preview, result);
            if (problems.length) throw new Error(`lab preview and update disagree (the program must register the same resources in a preview, and the preview must announce every step):\n${problems.join("\n")}`);
            return result;
        }
        const { result, log } = await this.runJob({ ...job, preview: false });
        return result.failures.length ? fail("destroy", result, log) : result;
    }

    /** Runs one lab/apply.ts job in a fresh process. */
    private async runJob(fields: Omit<ApplyJob, "resultFile">): Promise<{ result: ApplyResult; log: string }> {
        const n = ++this.applyCount;
        const kind = fields.preview ? "preview" : fields.destroy ? "destroy" : "up";
        const job: ApplyJob = { ...fields, resultFile: path.join(this.world.root, `apply-${n}-${kind}.result.json`) };
        const jobFile = path.join(this.world.root, `apply-${n}-${kind}.job.json`);
        fs.writeFileSync(jobFile, JSON.stringify(job), { mode: 0o600 });
        const log = path.join(this.world.root, `apply-${n}-${kind}.log`);
        const code = await new Promise<number>((resolve) => {
            const fd = fs.openSync(log, "w");
            const child = spawn(process.execPath, ["--import", "tsx", path.join(__dirname, "apply.ts"), jobFile], { cwd: REPO, stdio: ["ignore", fd, fd] });
            fs.closeSync(fd);
            const timer = setTimeout(() => child.kill("SIGKILL"), 600_000);
            child.on("close", (c) => {
                clearTimeout(timer);
                resolve(c ?? 1);
            });
        });
        if ((code !== 0 && code !== EXIT_FAILED) || !fs.existsSync(job.resultFile)) throw new Error(`lab ${kind} ${n} crashed (${code}):\n${fs.readFileSync(log, "utf8").slice(-4000)}`);
        return { result: JSON.parse(fs.readFileSync(job.resultFile, "utf8")) as ApplyResult, log };
    }

    record(group: string, name: string, pass: boolean, detail: string): boolean {
        this.checks.push({ group, name, pass, detail });
        return pass;
    }

    /** The test peer joins the tunnel, routing only its subnet through it (like a site). */
    async peerUp(outputs: StackOutputs): Promise<string> {
        const { gatewayPublicKey, gatewayEndpoint: endpoint } = outputs;
        const own = outputs.peerAddresses.labpeer;
        const wg = this.world.wgName("p");
        const keyFile = path.join(this.world.root, "peer.key");
        fs.writeFileSync(keyFile, this.peerPrivateKey, { mode: 0o600 });
        await inNs(
            this.world.ns("peer"),
            `set -e
            ip link del ${wg} 2>/dev/null || true
            WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go ${wg} >/dev/null 2>&1
            wg set ${wg} private-key ${keyFile} peer ${gatewayPublicKey} endpoint ${endpoint} allowed-ips 0.0.0.0/0,::/0 persistent-keepalive 25
            ip addr add ${own.addressV4}/24 dev ${wg}; ip -6 addr add ${own.addressV6}/64 dev ${wg} nodad
            ip link set ${wg} mtu 1420 up
            ip rule add from ${LAB.testPeer.subnet} lookup 200 2>/dev/null || true
            ip -6 rule add from ${LAB.testPeer.subnetV6} lookup 200 2>/dev/null || true
            ip route replace default dev ${wg} table 200; ip -6 route replace default dev ${wg} table 200`,
        );
        return wg;
    }

    async peerDown(wg: string): Promise<void> {
        await inNs(this.world.ns("peer"), `ip link del ${wg} 2>/dev/null; ip rule del from ${LAB.testPeer.subnet} lookup 200 2>/dev/null; ip -6 rule del from ${LAB.testPeer.subnetV6} lookup 200 2>/dev/null; true`, { allowFail: true });
        await waitFor("test peer wireguard-go to exit", () => !fs.existsSync(`/var/run/wireguard/${wg}.sock`), 10_000);
    }

    /** HTTP GET from a namespace, with a source address; returns the body or undefined. */
    async httpFrom(role: Parameters<LabWorld["ns"]>[0], source: string, url: string, seconds = 3): Promise<string | undefined> {
        const r = await inNs(this.world.ns(role), `curl -s -g -m ${seconds} --interface ${source} ${url}`, { allowFail: true, timeoutMs: (seconds + 5) * 1000 });
        return r.code === 0 ? r.stdout.trim() : undefined;
    }

    async destroy(): Promise<string[]> {
        return this.world.destroy();
    }
}

/** The gateway scenario of the matrix: one placement, applied, probed, re-applied, destroyed. */
export async function gatewayScenario(lab: Lab, placement: "existing" | "oci", opts: { sabotage?: boolean } = {}): Promise<void> {
    const group = `gateway/${placement}`;
    const w = lab.world;
    // The gateway alone: no site, so no peer may name one.
    // A roaming client whose key the program generates joins the test peer.
    const peers = [...(lab.baseOverrides().peers as Record<string, unknown>[]).map((p) => ({ ...p, canReach: [] })), { name: "roamer", generateKey: true, dns: [LAB.server.v4] }];
    const overrides = { ...(placement === "oci" ? lab.ociOverrides() : {}), sites: [], peers };
    if (placement === "oci") await w.hostExec("cloud", `iptables-restore <<'EOF'\n${OCI_STOCK_IPTABLES}\nEOF`);
    const before = await w.hostSnapshot("cloud");
    const sshPortState = async (from: "peer" | "ctl") =>
        (await inNs(w.ns(from), `timeout 3 bash -c '</dev/tcp/${LAB.cloudPublic.v4}/22' && echo open || echo closed`, { allowFail: true })).stdout.trim();
    // "<peers on wg0> <routes to the extra peer's subnet>"
    const peersAndExtraRoute = async () =>
        (await w.hostExec("cloud", "echo $(wg show wg0 peers | wc -l) $(ip route show dev wg0 proto 77 | grep -c 192.168.201.0/24)")).stdout.trim();

    const applied = await lab.apply(overrides);
    const outputs = applied.outputs as unknown as StackOutputs;
    lab.record(group, "apply creates the gateway", applied.executions.length > 0, `${applied.executions.length} steps, ${applied.wallMs} ms`);
    lab.record(group, "public key exported and valid", /^[A-Za-z0-9+/]{43}=$/.test(outputs.gatewayPublicKey), outputs.gatewayPublicKey);
    lab.record(group, "endpoint is the public address", outputs.gatewayEndpoint === `${LAB.cloudPublic.v4}:51820`, outputs.gatewayEndpoint);
    const keyMode = await w.hostExec("cloud", "stat -c %a /etc/wgexit/gateway/private.key");
    lab.record(group, "private key made on the host, mode 0600", keyMode.stdout.trim() === "600", keyMode.stdout.trim());

    const wg = await lab.peerUp(outputs);
    try {
        if (opts.sabotage) await w.hostExec("cloud", "nft insert rule inet wgexit_gateway forward iifname wg0 accept");
        w.clearLog("srv-http-clients");
        const seen4 = await lab.httpFrom("peer", LAB.testPeer.subnetHost, `http://${LAB.server.v4}:${LAB.server.httpPort}/`, 8);
        lab.record(group, "peer subnet reaches the internet as the gateway (IPv4)", seen4 === LAB.cloudPublic.v4, `server saw ${seen4 ?? "nothing"}`);
        const hs = await inNs(w.ns("peer"), `wg show ${wg} latest-handshakes | cut -f2`);
        const handshake = Number(hs.stdout.trim());
        lab.record(group, "peer completes a handshake", handshake > 0, handshake > 0 ? `${Math.round(Date.now() / 1000 - handshake)} s ago` : "none");
        const seen6 = await lab.httpFrom("peer", LAB.testPeer.subnetHostV6, `http://[${LAB.server.v6}]:${LAB.server.httpPort}/`);
        lab.record(group, "peer subnet reaches the internet as the gateway (IPv6, NAT66)", seen6 === LAB.cloudPublic.v6, `server saw ${seen6 ?? "nothing"}`);

        w.clearLog("vcn-metadata-clients");
        const meta = await lab.httpFrom("peer", LAB.testPeer.subnetHost, `http://${LAB.metadata}/`, 2);
        const neighbour = await lab.httpFrom("peer", LAB.testPeer.subnetHost, `http://${LAB.cloudPrivate.neighbour}/`, 2);
        const arrived = w.readLog("vcn-metadata-clients");
        lab.record(group, "forward to 169.254.169.254 dropped", meta === undefined && arrived.length === 0, `answer ${meta ?? "none"}, metadata listener saw ${arrived.length} connections`);
        lab.record(group, "forward to the gateway's private network dropped", neighbour === undefined && arrived.length === 0, `answer ${neighbour ?? "none"}, neighbour saw ${arrived.length} connections`);
        const tunnelSsh = await lab.httpFrom("peer", LAB.testPeer.subnetHost, "telnet://10.66.0.1:22", 2);
        lab.record(group, "peer cannot reach the gateway's SSH through the tunnel", tunnelSsh === undefined, tunnelSsh === undefined ? "no answer" : "SSH answered");
        const worldSsh = await sshPortState("peer");
        lab.record(group, "SSH closed to non-admin addresses", worldSsh === "closed", worldSsh);
        const adminSsh = await sshPortState("ctl");
        lab.record(group, "SSH open to the admin CIDR", adminSsh === "open", adminSsh);
        if (placement === "oci") {
            const chain = await w.hostExec("cloud", "iptables -S InstanceServices | wc -l; iptables -S FORWARD | tail -1");
            lab.record(group, "OCI InstanceServices chain and REJECT rules kept", /REJECT/.test(chain.stdout) && Number(chain.stdout.split("\n")[0]) > 2, chain.stdout.replace(/\n/g, " | "));
        }
    } finally {
        await lab.peerDown(wg);
    }

    await roamingClientCheck(lab, group, outputs);

    const again = await lab.apply(overrides);
    lab.record(group, "second apply executes nothing", again.executions.length === 0, stepsTaken(again));
    if (placement === "oci") {
        // A month later: Oracle has published a newer image. The instance keeps the one it was made from.
        const later = await lab.apply(overrides, false, { newerImages: true });
        lab.record(group, "a month later, with a newer image upstream, `pulumi up` changes nothing", later.executions.length === 0, stepsTaken(later));
    } else {
        await signInChecks(lab, group, overrides);
        await adoptionRefused(lab, group, overrides);
        await sessionKept(lab, group, overrides);
    }

    // A new peer is applied in place: only the peers step runs, and the tunnel is not restarted.
    const tunnelId = async () => (await w.hostExec("cloud", "cat /sys/class/net/wg0/ifindex; wg show wg0 listen-port")).stdout.trim();
    const idBefore = await tunnelId();
    const extraKey = (await run(["wg", "pubkey"], { input: (await run(["wg", "genkey"])).stdout })).stdout.trim();
    const withExtra = { ...overrides, peers: [...peers, { name: "extra", publicKey: extraKey, allowedIps: ["192.168.201.0/24"] }] };
    const added = await lab.apply(withExtra);
    const peersNow = await peersAndExtraRoute();
    const onlyPeers = (r: typeof added) => r.executions.length > 0 && r.executions.every((e) => e.key.endsWith("::gateway-peers") && e.action === "update");
    lab.record(group, "adding a peer runs only the peers step, as an update", onlyPeers(added), stepsTaken(added));
    lab.record(group, "the added peer and its route are live", peersNow === `${peers.length + 1} 1`, peersNow);
    const removed = await lab.apply(overrides);
    const peersAfter = await peersAndExtraRoute();
    lab.record(group, "removing the peer removes it and its route", onlyPeers(removed) && peersAfter === `${peers.length} 0`, peersAfter);
    lab.record(group, "peer changes never restart the tunnel", (await tunnelId()) === idBefore, idBefore.replace(/\n/g, " "));
    // Stateless (-s): the rules, without counters that the check's own SSH traffic moves.
    const rules1 = await w.hostExec("cloud", "nft -s list ruleset");
    await w.hostExec("cloud", "/etc/wgexit/gateway/gateway.sh install >/dev/null");
    const rules2 = await w.hostExec("cloud", "nft -s list ruleset");
    lab.record(group, "running the install twice leaves the ruleset byte-identical", rules1.stdout === rules2.stdout, rules1.stdout === rules2.stdout ? `${rules1.stdout.length} bytes` : diffLines(rules1.stdout, rules2.stdout));

    await lab.apply(overrides, true);
    const after = await w.hostSnapshot("cloud");
    lab.record(group, "destroy leaves the host as it was", before === after, before === after ? "identical" : diffLines(before, after));
    if (placement === "existing") await firstInstallUndone(lab, group, overrides, before);
    if (placement === "oci") await w.hostExec("cloud", "iptables-restore <<'EOF'\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\nEOF\nnft delete table ip filter");
}

/**
 * How the program signs in, as @pulumi/command does: a key with a passphrase (given as
 * sshPrivateKeyPassword), and a pinned host key, refused when it is not the host's.
 */
async function signInChecks(lab: Lab, group: string, overrides: Overrides): Promise<void> {
    const w = lab.world;
    const encrypted = path.join(w.root, "operator-passphrase");
    fs.copyFileSync(w.sshKeyFile, encrypted);
    await run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "lab passphrase", "-f", encrypted]);
    const withPassphrase = { ...overrides, sshPrivateKey: fs.readFileSync(encrypted, "utf8"), sshPrivateKeyPassword: "lab passphrase" };
    const signed = await lab.apply(withPassphrase, false, { allowFailure: true });
    lab.record(group, "a key with a passphrase signs in with sshPrivateKeyPassword (each step re-run in place)", signed.failures.length === 0 && signed.executions.length > 0 && signed.executions.every((e) => e.action === "update"), signed.failures[0]?.slice(0, 200) ?? stepsTaken(signed));

    const existing = labStackFile()["wgexit:existing"] as Record<string, unknown>;
    const realHostKey = fs.readFileSync(path.join(w.root, "host-cloud", "ssh_host_ed25519_key.pub"), "utf8").split(" ").slice(0, 2).join(" ");
    const otherHostKey = fs.readFileSync(`${w.sshKeyFile}.pub`, "utf8").split(" ").slice(0, 2).join(" ");
    const wrong = await lab.apply({ ...withPassphrase, existing: { ...existing, hostKey: otherHostKey } }, false, { allowFailure: true });
    lab.record(group, "a pinned host key that is not the host's is refused, and nothing runs on the host", wrong.failures.length > 0 && /host key/i.test(wrong.failures.join(" ")), failureLine(wrong, /.*host key.*/i));
    const pinned = await lab.apply({ ...withPassphrase, existing: { ...existing, hostKey: realHostKey } }, false, { allowFailure: true });
    lab.record(group, "the host's own key, pinned, is accepted", pinned.failures.length === 0, pinned.failures[0]?.slice(0, 200) ?? `${pinned.executions.length} steps`);
    await lab.apply(overrides);
}

/**
 * A wgInterface that names the host's own uplink: the install refuses before it changes
 * anything (before, it took over eth0: new MTU and addresses on the uplink, then failed).
 */
async function adoptionRefused(lab: Lab, group: string, overrides: Overrides): Promise<void> {
    const w = lab.world;
    const before = await w.hostSnapshot("cloud");
    const refused = await lab.apply({ ...overrides, wgInterface: "eth0" }, false, { allowFailure: true });
    const after = await w.hostSnapshot("cloud");
    const said = failureLine(refused, /.*refused before any change.*/);
    lab.record(group, "a wgInterface naming the host's uplink is refused before any change, the host byte-identical", /a link named eth0 already exists/.test(said) && before === after, before === after ? said.trim() : diffLines(before, after));
    const again = await lab.apply(overrides);
    lab.record(group, "after the refusal the operator's SSH still works and nothing is left to do", again.executions.length === 0, stepsTaken(again));
}

/**
 * A first install that fails halfway: another program holds the WireGuard port, so the tunnel's
 * configuration fails after forwarding, the link and its addresses are set. The install undoes
 * itself: the host is byte-identical to before, and the step's error says why.
 */
async function firstInstallUndone(lab: Lab, group: string, overrides: Overrides, clean: string): Promise<void> {
    const w = lab.world;
    const squatter = w.startLabDaemon("port-squatter", "cloud", [PYTHON, "-c", "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 51820))\ntime.sleep(3600)"]);
    try {
        await waitFor("the squatter on UDP 51820", async () => (await w.hostExec("cloud", "ss -Hulnp 'sport = :51820' | grep -q .", true)).code === 0);
        const failed = await lab.apply(overrides, false, { allowFailure: true });
        const after = await w.hostSnapshot("cloud");
        const said = failureLine(failed, /.*first install failed.*/);
        lab.record(group, "a first install that fails halfway (port taken) undoes itself: the host byte-identical", failed.failures.length > 0 && /undoing what it did/.test(said) && after === clean, after === clean ? said : diffLines(clean, after));
    } finally {
        await w.stopLabDaemon(squatter);
    }
    await lab.apply(overrides, true);
}

/**
 * Steps that would cut the operator's own SSH session are refused before any change: a
 * firewall whose adminCidrs leave the operator out, and a peer (opted in to public prefixes)
 * whose allowedIps hold the operator's address. The operator is 203.0.113.20 as the gateway
 * sees it (the home router's NAT).
 */
async function sessionKept(lab: Lab, group: string, overrides: Overrides): Promise<void> {
    const w = lab.world;
    let before = await w.hostSnapshot("cloud");
    const lockout = await lab.apply({ ...overrides, adminCidrs: ["198.51.100.0/24"] }, false, { allowFailure: true });
    let after = await w.hostSnapshot("cloud");
    const lockoutSaid = failureLine(lockout, /.*refused before any change.*/);
    lab.record(group, "adminCidrs without the operator's address: refused, the host byte-identical", /session comes from 203\.0\.113\.20, which adminCidrs/.test(lockoutSaid) && before === after, before === after ? lockoutSaid : diffLines(before, after));

    const narrow = { ...overrides, adminCidrs: ["203.0.113.20/31"] };
    await lab.apply(narrow);
    before = await w.hostSnapshot("cloud");
    const key = (await run(["wg", "pubkey"], { input: (await run(["wg", "genkey"])).stdout })).stdout.trim();
    const peers = (overrides.peers ?? labStackFile()["wgexit:peers"]) as unknown[];
    const hijack = await lab.apply({ ...narrow, peers: [...peers, { name: "hijack", publicKey: key, allowedIps: ["203.0.113.20/32"], allowPublicPrefixes: true }] }, false, { allowFailure: true });
    after = await w.hostSnapshot("cloud");
    const hijackSaid = failureLine(hijack, /.*refused before any change.*/);
    lab.record(group, "a peer's allowedIps holding the operator's address: refused, the host byte-identical", /inside 203\.0\.113\.20\/32 \(a peer's allowedIps/.test(hijackSaid) && before === after, before === after ? hijackSaid : diffLines(before, after));
    await lab.apply(overrides);
    const again = await lab.apply(overrides);
    lab.record(group, "after both refusals the operator's SSH still works and nothing is left to do", again.executions.length === 0, stepsTaken(again));
}

/**
 * A phone on the café Wi-Fi (the laptop's namespace, behind the home router's NAT, before
 * the laptop scenario runs) imports its generated config with wg-quick (the lab has no
 * resolvconf, so the DNS line is left out) and browses through the gateway.
 */
async function roamingClientCheck(lab: Lab, group: string, outputs: StackOutputs): Promise<void> {
    const w = lab.world;
    const config = outputs.clientConfigs?.roamer ?? "";
    const iface = w.wgName("r");
    const dir = fs.mkdtempSync(path.join(w.root, "roamer-"));
    const file = path.join(dir, `${iface}.conf`);
    fs.writeFileSync(file, config.replace(/^DNS = .*\n/m, ""), { mode: 0o600 });
    const env = "WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1";
    const up = await inNs(w.ns("laptop"), `${env} wg-quick up ${file} 2>&1`, { allowFail: true, timeoutMs: 30_000 });
    try {
        const plain = await inNs(w.ns("laptop"), `curl -s -m 8 http://${LAB.server.v4}:${LAB.server.httpPort}/`, { allowFail: true, timeoutMs: 15_000 });
        lab.record(group, "a roaming client imports its generated config (wg-quick) and egresses as the gateway", /PrivateKey = [A-Za-z0-9+/]{43}=/.test(config) && plain.stdout.trim() === LAB.cloudPublic.v4, `server saw ${plain.stdout.trim() || "nothing"}; wg-quick up (exit ${up.code}): ${up.stdout.replace(/\n/g, " | ").slice(-400)}`);
    } finally {
        await inNs(w.ns("laptop"), `${env} wg-quick down ${file} 2>&1`, { allowFail: true, timeoutMs: 30_000 });
        await waitFor("the roaming client's wireguard-go to exit", () => !fs.existsSync(`/var/run/wireguard/${iface}.sock`), 10_000).catch(() => undefined);
    }
}

/** The line of a failed apply that matches `pattern` (for the matrix), else the start of its first failure, else "accepted". */
export function failureLine(r: { failures: string[] }, pattern: RegExp): string {
    return r.failures.join("\n").match(pattern)?.[0]?.trim() ?? (r.failures[0]?.slice(0, 160) || "accepted");
}

/** The steps an apply took, for the matrix: "update site-home-install, create …", or "0 steps". */
export function stepsTaken(r: { executions: { action: string; key: string }[] }): string {
    return r.executions.map((e) => `${e.action} ${e.key.split("::")[1] ?? e.key}`).join(", ") || "0 steps";
}

/** What a status report says about peers (its "peer" lines), for the matrix. */
export function statusPeerLines(report: RunResult): string[] {
    return report.stdout.split("\n").filter((l) => / {2}peer \S+ +(ok|idle|FAIL) /.test(l));
}

/** A status report's exit code and its problem lines, for the matrix. */
export function statusProblems(report: RunResult): string {
    return `exit ${report.code}: ${report.stdout.split("\n").filter((l) => /FAIL|problem/.test(l)).join("; ")} ${report.stderr}`.trim();
}

export function diffLines(a: string, b: string): string {
    const as = new Set(a.split("\n"));
    const bs = new Set(b.split("\n"));
    const gone = [...as].filter((l) => !bs.has(l)).map((l) => `- ${l}`);
    const added = [...bs].filter((l) => !as.has(l)).map((l) => `+ ${l}`);
    return [...gone, ...added].slice(0, 30).join("\n");
}

/** The stock firewall of OCI's Ubuntu images (abridged to the parts that matter here). */
export const OCI_STOCK_IPTABLES = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:InstanceServices - [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p udp -m udp --sport 123 -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
-A OUTPUT -d 169.254.0.0/16 -j InstanceServices
-A InstanceServices -d 169.254.0.2/32 -p tcp -m owner --uid-owner 0 -m tcp --dport 3260 -j ACCEPT
-A InstanceServices -d 169.254.169.254/32 -p udp -m udp --dport 53 -j ACCEPT
-A InstanceServices -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j ACCEPT
-A InstanceServices -d 169.254.0.0/16 -p tcp -m tcp -j REJECT --reject-with tcp-reset
-A InstanceServices -d 169.254.0.0/16 -p udp -m udp -j REJECT --reject-with icmp-port-unreachable
COMMIT`;

export function formatMatrix(checks: Check[]): string {
    const width = Math.max(...checks.map((c) => c.name.length), 10);
    const groupWidth = Math.max(...checks.map((c) => c.group.length), 5);
    const lines = [`${"group".padEnd(groupWidth)}  ${"check".padEnd(width)}  result  detail`];
    for (const c of checks) lines.push(`${c.group.padEnd(groupWidth)}  ${c.name.padEnd(width)}  ${c.pass ? "pass  " : "FAIL  "}  ${c.detail.split("\n")[0].slice(0, 100)}`);
    const failed = checks.filter((c) => !c.pass).length;
    lines.push(`${checks.length - failed} passed, ${failed} failed`);
    return lines.join("\n");
}
