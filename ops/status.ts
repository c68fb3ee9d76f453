// npm run status -- [--stack NAME | --config FILE] [--identity FILE] [--known-hosts FILE] [--gateway HOST] [--json]
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
import { argValue, UsageError } from "./args";

/** A handshake older than this, on a peer that keeps its tunnel alive, is a fault. */
export const STALE_SECONDS = 180;

export interface StatusTarget {
    /** What this host is, for the report: "gateway", "site home", "laptop mac (VM)". */
    label: string;
    host: string;
    port: number;
    user: string;
    script: string;
    /** Peers (by name) that keep the tunnel alive: a stale handshake with them is a fault. */
    keepalivePeers: string[];
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

/** Every host of the stack and the role script that reports on it. */
export function statusTargets(config: StackConfig, gatewayHost: string): StatusTarget[] {
    const keepalive = [...config.sites.map((s) => s.name), ...config.laptops.map((l) => l.name)];
    const gw = config.existing ?? { port: 22, user: config.sshUser };
    const targets: StatusTarget[] = [{ label: "gateway", host: gatewayHost, port: gw.port, user: gw.user, script: GATEWAY_SCRIPT, keepalivePeers: keepalive }];
    const further = config.extraGateways;
    // Further gateways on existing hosts (those on new instances are found with --stack: furtherGateways output).
    for (const g of further) {
        if (g.existing) targets.push({ label: `gateway ${g.name}`, host: g.existing.host, port: g.existing.port, user: g.existing.user, script: GATEWAY_SCRIPT, keepalivePeers: keepalive });
    }
    for (const s of config.sites) {
        // With further gateways, failover.sh reports the site (site.sh's checks, and which tunnel carries guests).
        const script = further.length ? failoverScript(SITE_FAILOVER) : SITE_SCRIPT;
        targets.push({ label: `site ${s.name}`, host: s.connection.host, port: s.connection.port, user: s.connection.user, script, keepalivePeers: ["gateway", ...further.map((g) => g.name)], traffic: SITE_FAILOVER.traffic });
    }
    for (const l of config.laptops) {
        // Likewise the VM's failover.sh reports the VM (vm.sh's checks, and which tunnel carries the laptop).
        const script = further.length ? failoverScript(LAPTOP_VM_FAILOVER) : VM_SCRIPT;
        targets.push({ label: `laptop ${l.name} (VM)`, host: l.vm.host, port: l.vm.port, user: l.vm.user, script, keepalivePeers: ["gateway", ...further.map((g) => g.name)], traffic: LAPTOP_VM_FAILOVER.traffic });
        targets.push({ label: `laptop ${l.name}`, host: l.laptop.host, port: l.laptop.port, user: l.laptop.user, script: `${laptopDir(l.os)}/laptop.sh`, keepalivePeers: [] });
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
            const judged = target.keepalivePeers.includes(name);
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
    const remote = `S=""; [ "$(id -u)" = 0 ] || S="sudo -n"; if [ -x '${target.script}' ]; then $S '${target.script}' status; else echo "check role installed FAIL"; exit 1; fi`;
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

function gatewayAddress(config: StackConfig, given: string | undefined, stack: string | undefined): string {
    if (given) return given;
    if (config.existing) return config.existing.host;
    const hint = `placement ${config.placement}: the gateway's address is a stack output; pass --gateway <address> (see: pulumi stack output gatewayAddress)`;
    if (!stack) throw new UsageError(hint);
    const r = spawnSync("pulumi", ["stack", "output", "gatewayAddress", "--stack", stack], { encoding: "utf8" });
    if (r.status !== 0 || !r.stdout.trim()) throw new UsageError(`${hint}; \`pulumi stack output\` did not answer: ${(r.stderr || String(r.error)).trim()}`);
    return r.stdout.trim();
}

export function main(args: string[]): number {
    try {
        const stack = argValue(args, "--stack");
        const file = argValue(args, "--config") ?? (stack ? path.join(__dirname, "..", `Pulumi.${stack}.yaml`) : undefined);
        if (!file) throw new UsageError("name the stack: --stack dev (reads Pulumi.dev.yaml) or --config <stack file>");
        if (!fs.existsSync(file)) throw new UsageError(`no stack file ${file}`);
        const config = parseStackConfig(stackFileConfig(file));
        const targets = statusTargets(config, gatewayAddress(config, argValue(args, "--gateway"), stack));
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
