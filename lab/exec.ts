// Process helpers for the lab: bounded commands, background daemons tracked by PID.
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";

export interface RunResult {
    code: number;
    stdout: string;
    stderr: string;
}

export interface RunOptions {
    input?: string;
    timeoutMs?: number;
    /** Do not throw on a non-zero exit. */
    allowFail?: boolean;
    env?: NodeJS.ProcessEnv;
    cwd?: string;
}

export class CommandError extends Error {
    constructor(
        readonly argv: string[],
        readonly result: RunResult,
    ) {
        super(`command failed (${result.code}): ${argv.join(" ").slice(0, 400)}\n${result.stderr.slice(-2000)}${result.stdout.slice(-1000)}`);
    }
}

/** Runs argv (no shell) with a hard time limit. */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? 120_000;
    return new Promise((resolve, reject) => {
        const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], env: opts.env ?? process.env, cwd: opts.cwd });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (d) => {
            stdout += d;
        });
        child.stderr.on("data", (d) => {
            stderr += d;
        });
        const timer = setTimeout(() => {
            stderr += `\n[lab] timed out after ${timeoutMs} ms`;
            child.kill("SIGKILL");
        }, timeoutMs);
        child.on("error", (e) => {
            clearTimeout(timer);
            reject(e);
        });
        child.on("close", (code, signal) => {
            clearTimeout(timer);
            const result = { code: code ?? (signal ? 128 : 1), stdout, stderr };
            if (result.code !== 0 && !opts.allowFail) reject(new CommandError(argv, result));
            else resolve(result);
        });
        child.stdin.on("error", () => undefined);
        child.stdin.end(opts.input ?? "");
    });
}

/** `sh -c` in a network namespace. */
export function inNs(ns: string, script: string, opts: RunOptions = {}): Promise<RunResult> {
    return run(["ip", "netns", "exec", ns, "sh", "-c", script], opts);
}

export interface Daemon {
    name: string;
    pid: number;
    logFile: string;
    child: ChildProcess;
}

/** Starts a long-running process whose output goes to a log file; the lab stops it by PID. */
export function startDaemon(name: string, argv: string[], logFile: string): Daemon {
    const fd = fs.openSync(logFile, "a");
    const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", fd, fd], detached: false });
    fs.closeSync(fd);
    if (!child.pid) throw new Error(`could not start ${name}`);
    child.on("error", () => undefined);
    return { name, pid: child.pid, logFile, child };
}

export function isAlive(pid: number): boolean {
    try {
        process.kill(pid, 0);
        return true;
    } catch {
        return false;
    }
}

/** Stops one process we started: TERM, then KILL after a bounded wait. */
export async function stopPid(pid: number, waitMs = 3000): Promise<void> {
    if (!isAlive(pid)) return;
    try {
        process.kill(pid, "SIGTERM");
    } catch {
        return;
    }
    const until = Date.now() + waitMs;
    while (Date.now() < until) {
        if (!isAlive(pid)) return;
        await sleep(50);
    }
    try {
        process.kill(pid, "SIGKILL");
    } catch {
        // already gone
    }
}

export function sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
}

/** Polls until check() is true or the bound is reached. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000, stepMs = 100): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
        if (await check()) return;
        await sleep(stepMs);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

export function tail(file: string, lines = 20): string {
    try {
        return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
        return "(no log)";
    }
}
