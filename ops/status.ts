// npm run status -- [--stack NAME | --config FILE] [--identity FILE] [--known-hosts FILE] [--gateway [NAME=]HOST]... [--json]
// Connects to every host of a stack over SSH, runs its role's `status`, and prints, for each
// peer, the handshake age and bytes transferred, and whether the expected rules and routes
// are in place. Exits 1 when something is off, 2 on bad usage.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parse as parseYaml } from "yaml";
import { ConfigError, encodeConfig, parseStackConfig, type StackConfig } from "../components/config";
import { GATEWAY_SCRIPT } from "../components/cloudGateway.render";
import { SITE_SCRIPT } from "../components/kvmSite.render";
import { failoverScript, LAPTOP_VM_FAILOVER, SITE_FAILOVER } from "../components/failover.render";
import { laptopDir, VM_SCRIPT } from "../components/laptopClient.render";
import { argValue, argValues, UsageError } from "./args";

/** A handshake older than this, on a peer that keeps its tunnel alive, is a fault. */
export const STALE_SECONDS = 180;

export interface StatusTarget {
    /** What this host is, for the report: "gateway", "site home", "laptop mac (VM)". */
    label: string;
    host: string;
    port: number;
    user: string;
    /** The role script that reports: the first of these installed on the host. */
    scripts: string[];
    /**
     * Peers (by name) that roam: reported, not judged. Every other peer keeps its tunnel alive
     * (a site's and a VM's peers are gateways; a gateway's are sites, VMs and other gateways,
     * those of peer stacks too), so a stale handshake with it is a fault.
     */
    roamingPeers: string[];
    /** With several gateways: whose traffic its failover moves ("guest traffic"), the item its carrier line reports. */
    traffic?: string;
}

export interface StatusLine {
    target: string;
    item: string;
    ok: boolean;
    /** Informational only (a roaming client that is idle). */
    judged: boolean;
    detail: string;
}

/** The stack file's config as Pulumi would hand it to the program, without its secrets. */
export function stackFileConfig(file: string): Record<string, string> {
    const doc = parseYaml(fs.readFileSync(file, "utf8")) as { config?: Record<string, unknown> } | null;
    const config = { ...(doc?.config ?? {}) };
    // Status signs in with --identity (or the SSH agent), never with the stack's key; the
    // validator only needs to see that a key is set.
    config["wgexit:sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot used by status\n-----END OPENSSH PRIVATE KEY-----";
    return encodeConfig(config);
}

/**
 * Every host of the stack and the role script that reports on it. A site or laptop stack of
 * the split layout (gatewayStack) has no gateway of its own: its gateways are the gateway
 * stack's, checked there; whether it has further gateways is that stack's output, so its sites
 * and VMs report through failover.sh where their `pulumi up` installed it, and their role's
 * script otherwise.
 */
export function statusTargets(config: StackConfig, gatewayHosts: GatewayHosts): StatusTarget[] {
    const roaming = config.peers.map((p) => p.name);
    const targets: StatusTarget[] = [];
    const further = config.extraGateways;
    if (!config.gatewayStack) {
        // An existing host's login from its config; a new instance's is the stack's sshUser on 22.
        const gateway = (label: string, name: string, existing?: { port: number; user: string }) => {
            const login = existing ?? { port: 22, user: config.sshUser };
            targets.push({ label, host: gatewayHosts[name], port: login.port, user: login.user, scripts: [GATEWAY_SCRIPT], roamingPeers: roaming });
        };
        gateway("gateway", FIRST, config.existing);
        for (const g of further) gateway(`gateway ${g.name}`, g.name, g.existing);
    }
    // With further gateways, failover.sh reports the site or VM (its role's checks, and which tunnel carries the traffic).
    const reporting = (failover: string, role: string) => (config.gatewayStack ? [failover, role] : further.length ? [failover] : [role]);
    for (const s of config.sites) {
        targets.push({ label: `site ${s.name}`, host: s.connection.host, port: s.connection.port, user: s.connection.user, scripts: reporting(failoverScript(SITE_FAILOVER), SITE_SCRIPT), roamingPeers: [], traffic: SITE_FAILOVER.traffic });
    }
    for (const l of config.laptops) {
        targets.push({ label: `laptop ${l.name} (VM)`, host: l.vm.host, port: l.vm.port, user: l.vm.user, scripts: reporting(failoverScript(LAPTOP_VM_FAILOVER), VM_SCRIPT), roamingPeers: [], traffic: LAPTOP_VM_FAILOVER.traffic });
        // The laptop holds no tunnel: its report has checks, no peers.
        targets.push({ label: `laptop ${l.name}`, host: l.laptop.host, port: l.laptop.port, user: l.laptop.user, scripts: [`${laptopDir(l.os)}/laptop.sh`], roamingPeers: [] });
    }
    return targets;
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

/** Reads a role's `status` output: "check <what> ok|FAIL" and "peer <name> handshake=… rx=… tx=…". */
export function parseStatus(target: StatusTarget, output: string): StatusLine[] {
    const lines: StatusLine[] = [];
    for (const raw of output.split("\n")) {
        const check = raw.match(/^check (.+) (ok|FAIL)$/);
        if (check) {
            lines.push({ target: target.label, item: check[1], ok: check[2] === "ok", judged: true, detail: check[2] === "ok" ? "in place" : "missing" });
            continue;
        }
        const carrier = raw.match(/^carrier (\S+)(?: via (\S+) since (\d+|install))?$/);
        if (carrier) {
            const [, name, link, since] = carrier;
            lines.push({ target: target.label, item: target.traffic ?? "traffic", ok: name !== "none", judged: true, detail: name === "none" ? "no gateway answers: the kill switch holds it" : `by gateway ${name} (${link}), ${since === "install" ? "since install" : `for ${since} s`}` });
            continue;
        }
        const peer = raw.match(/^peer (\S+) handshake=(\d+|never) rx=(\d+) tx=(\d+)$/);
        if (peer) {
            const [, name, age, rx, tx] = peer;
            const judged = !target.roamingPeers.includes(name);
            const fresh = age !== "never" && Number(age) < STALE_SECONDS;
            const when = age === "never" ? "no handshake yet" : `handshake ${age} s ago`;
            lines.push({ target: target.label, item: `peer ${name}`, ok: fresh || !judged, judged, detail: `${when}, rx ${mib(Number(rx))}, tx ${mib(Number(tx))}${judged ? "" : " (roaming client: not judged)"}` });
        }
    }
    return lines;
}

function ssh(target: StatusTarget, opts: { identity?: string; knownHosts?: string }) {
    const argv = ["-p", String(target.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR"];
    if (opts.identity) argv.push("-i", opts.identity, "-o", "IdentitiesOnly=yes");
    if (opts.knownHosts) argv.push("-o", `UserKnownHostsFile=${opts.knownHosts}`);
    const candidates = target.scripts.map((s) => `'${s}'`).join(" ");
    const remote = `S=""; [ "$(id -u)" = 0 ] || S="sudo -n"; for s in ${candidates}; do if [ -x "$s" ]; then exec $S "$s" status; fi; done; echo "check role installed FAIL"; exit 1`;
    return spawnSync("ssh", [...argv, `${target.user}@${target.host}`, "--", remote], { encoding: "utf8", timeout: 60_000 });
}

export function collectStatus(targets: StatusTarget[], opts: { identity?: string; knownHosts?: string }): StatusLine[] {
    const lines: StatusLine[] = [];
    for (const target of targets) {
        const r = ssh(target, opts);
        if (r.status === 255 || r.status === null) {
            lines.push({ target: target.label, item: `ssh ${target.user}@${target.host}`, ok: false, judged: true, detail: (r.stderr || String(r.error ?? "no answer")).trim().split("\n").pop() ?? "" });
            continue;
        }
        const parsed = parseStatus(target, r.stdout);
        if (parsed.length === 0) parsed.push({ target: target.label, item: "status", ok: false, judged: true, detail: `no status output (exit ${r.status}): ${r.stderr.trim().slice(0, 200)}` });
        lines.push(...parsed);
    }
    return lines;
}

export function formatStatus(lines: StatusLine[]): string {
    const w1 = Math.max(...lines.map((l) => l.target.length), 4);
    const w2 = Math.max(...lines.map((l) => l.item.length), 4);
    const out = lines.map((l) => `${l.target.padEnd(w1)}  ${l.item.padEnd(w2)}  ${l.ok ? (l.judged ? "ok  " : "idle") : "FAIL"}  ${l.detail}`);
    const bad = lines.filter((l) => !l.ok).length;
    out.push(bad ? `${bad} problem${bad > 1 ? "s" : ""}` : "healthy");
    return out.join("\n");
}

/** The first gateway's name in `GatewayHosts`, as failover names it ("carrier gateway …"). */
const FIRST = "gateway";

/** Each gateway's address by name (the first is "gateway"). */
export type GatewayHosts = Record<string, string>;

/** Reads a stack output as JSON (the Pulumi CLI); throws UsageError with `hint` when it cannot. */
export type OutputReader = (stack: string, output: string, hint: string) => unknown;

const pulumiOutput: OutputReader = (stack, output, hint) => {
    const r = spawnSync("pulumi", ["stack", "output", output, "--json", "--stack", stack], { encoding: "utf8" });
    if (r.status !== 0 || !r.stdout.trim()) throw new UsageError(`${hint}; \`pulumi stack output\` did not answer: ${(r.stderr || String(r.error)).trim()}`);
    return JSON.parse(r.stdout) as unknown;
};

/**
 * The address of every gateway of the stack: an existing host's from the config; a new
 * instance's from `--gateway [NAME=]ADDRESS` (no name: the first), else from the stack's
 * outputs (gatewayAddress, furtherGateways) through the Pulumi CLI with --stack.
 */
export function gatewayHosts(config: StackConfig, given: string[], stack: string | undefined, read: OutputReader = pulumiOutput): GatewayHosts {
    const named: GatewayHosts = Object.fromEntries(given.map((g) => g.match(/^([^=]+)=(.+)$/)?.slice(1, 3) ?? [FIRST, g]));
    const unknown = Object.keys(named).filter((n) => n !== FIRST && !config.extraGateways.some((g) => g.name === n));
    if (unknown.length) throw new UsageError(`--gateway ${unknown[0]}=…: no further gateway is named ${unknown[0]} in this stack (gateways: ${config.extraGateways.map((g) => g.name).join(", ") || "none"})`);
    const outputs = new Map<string, unknown>();
    const fromOutput = (output: string, name: string, pick: (value: unknown) => unknown) => {
        const hint = `${name === FIRST ? "the gateway" : `gateway ${name}`} is on a new instance: its address is the stack output ${output}; pass --gateway ${name === FIRST ? "" : `${name}=`}<address>, or --stack with the Pulumi CLI on the PATH`;
        if (!stack) throw new UsageError(hint);
        if (!outputs.has(output)) outputs.set(output, read(stack, output, hint));
        const address = pick(outputs.get(output));
        if (typeof address !== "string" || !address) throw new UsageError(`${hint}; the output has no address for it`);
        return address;
    };
    // A given address wins over the config's: the operator may reach a host another way.
    const hosts: GatewayHosts = { [FIRST]: named[FIRST] ?? config.existing?.host ?? fromOutput("gatewayAddress", FIRST, (v) => v) };
    for (const g of config.extraGateways) {
        hosts[g.name] = named[g.name] ?? g.existing?.host ?? fromOutput("furtherGateways", g.name, (v) => (v as Record<string, { address?: unknown }> | null)?.[g.name]?.address);
    }
    return hosts;
}

export function main(args: string[]): number {
    try {
        const stack = argValue(args, "--stack");
        const file = argValue(args, "--config") ?? (stack ? path.join(__dirname, "..", `Pulumi.${stack}.yaml`) : undefined);
        if (!file) throw new UsageError("name the stack: --stack dev (reads Pulumi.dev.yaml) or --config <stack file>");
        if (!fs.existsSync(file)) throw new UsageError(`no stack file ${file}`);
        const config = parseStackConfig(stackFileConfig(file));
        const given = argValues(args, "--gateway");
        if (config.gatewayStack) {
            if (given.length) throw new UsageError(`--gateway: this stack's gateways are those of stack ${config.gatewayStack}; ask them with that stack (npm run status -- --stack <its name> --gateway …)`);
            console.error(`status: the gateways are those of stack ${config.gatewayStack}; check them there (npm run status -- --stack <its name>)`);
        }
        const targets = statusTargets(config, config.gatewayStack ? {} : gatewayHosts(config, given, stack));
        const lines = collectStatus(targets, { identity: argValue(args, "--identity"), knownHosts: argValue(args, "--known-hosts") });
        console.log(args.includes("--json") ? JSON.stringify({ healthy: lines.every((l) => l.ok), lines }, null, 2) : formatStatus(lines));
        return lines.every((l) => l.ok) ? 0 : 1;
    } catch (e) {
        if (e instanceof UsageError || e instanceof ConfigError) {
            console.error(`status: ${e.message}`);
            return 2;
        }
        throw e;
    }
}

if (require.main === module) process.exit(main(process.argv.slice(2)));
