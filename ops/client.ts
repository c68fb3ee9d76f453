// npm run client -- NAME [--stack NAME | --outputs FILE] [--out DIR]
// A roaming client's ready-to-import config: printed as a QR code in the terminal (scan it
// with the WireGuard app), and written as NAME.conf and NAME.png (both mode 0600). The
// config comes from the stack output clientConfigs, through the Pulumi CLI or a saved
// `pulumi stack output --json --show-secrets` file.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as QRCode from "qrcode";
import { argValue, UsageError } from "./args";

function clientConfigs(args: string[]): Record<string, string> {
    const file = argValue(args, "--outputs");
    if (file) {
        if (!fs.existsSync(file)) throw new UsageError(`no outputs file ${file}`);
        const outputs = JSON.parse(fs.readFileSync(file, "utf8")) as { clientConfigs?: Record<string, string> };
        return outputs.clientConfigs ?? {};
    }
    const stack = argValue(args, "--stack");
    const r = spawnSync("pulumi", ["stack", "output", "clientConfigs", "--json", "--show-secrets", ...(stack ? ["--stack", stack] : [])], { encoding: "utf8" });
    if (r.status !== 0) throw new UsageError(`could not read the stack output clientConfigs (${(r.stderr || String(r.error)).trim()}); pass --stack NAME, or --outputs FILE saved with \`pulumi stack output --json --show-secrets > FILE\``);
    return JSON.parse(r.stdout) as Record<string, string>;
}

export async function main(args: string[]): Promise<number> {
    try {
        const name = args.find((a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--"));
        if (!name) throw new UsageError("name the client: npm run client -- phone [--stack dev | --outputs outputs.json] [--out DIR]");
        const configs = clientConfigs(args);
        const config = configs[name];
        if (!config) throw new UsageError(`no client "${name}" in clientConfigs; the clients are ${Object.keys(configs).join(", ") || "(none: add one under peers)"}`);
        const out = argValue(args, "--out") ?? ".";
        fs.mkdirSync(out, { recursive: true });
        const confFile = path.join(out, `${name}.conf`);
        const pngFile = path.join(out, `${name}.png`);
        // Created 0600 from the start (an older file is replaced, not reused): they may hold a private key.
        const writePrivate = (file: string, data: string | Buffer) => {
            fs.rmSync(file, { force: true });
            fs.writeFileSync(file, data, { mode: 0o600, flag: "wx" });
        };
        writePrivate(confFile, config);
        writePrivate(pngFile, await QRCode.toBuffer(config, { type: "png", errorCorrectionLevel: "M", margin: 4, scale: 6 }));
        console.log(await QRCode.toString(config, { type: "terminal", small: true, errorCorrectionLevel: "M" }));
        const secret = !/PrivateKey = </.test(config);
        console.log(`${confFile} and ${pngFile} written (mode 0600).${secret ? " They hold the client's private key: import them, then delete them." : " Put the device's own private key where the placeholder is."}`);
        return 0;
    } catch (e) {
        if (e instanceof UsageError) {
            console.error(`client: ${e.message}`);
            return 2;
        }
        throw e;
    }
}

if (require.main === module) main(process.argv.slice(2)).then((code) => process.exit(code));
